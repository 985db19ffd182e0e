"""Registered stages, in pipeline order. A new stage adds one entry."""

from .base import Stage, StageReport, TrainingStage
from .card import CardStage
from .mp import MPStage
from .original import OriginalStage
from .vd import VDStage

STAGES: dict[str, Stage] = {
    "original": OriginalStage(), "mp": MPStage(), "vd": VDStage(), "card": CardStage(),
}

__all__ = ["STAGES", "Stage", "StageReport", "TrainingStage"]
