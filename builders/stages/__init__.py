"""The stages of a build, in pipeline order: one per registered method, then the card."""

from zoo_dataset.methods import default_methods, methods

from .base import MethodStage, Stage, StageReport
from .card import CardStage

STAGES: dict[str, Stage] = {**{name: MethodStage(m) for name, m in methods().items()}, "card": CardStage()}
DEFAULT_STAGES: tuple[str, ...] = (*(m.name for m in default_methods()), "card")

__all__ = ["DEFAULT_STAGES", "MethodStage", "STAGES", "Stage", "StageReport"]
