"""Registered stages, in pipeline order. A new stage adds one entry."""

from .base import Stage, StageReport, TrainingStage
from .original import OriginalStage

STAGES: dict[str, Stage] = {"original": OriginalStage()}

__all__ = ["STAGES", "Stage", "StageReport", "TrainingStage"]
