"""Training: one job shape for every stage, a reference trainer, and shared recipes."""

from .jobs import JobResult, Trainer, TrainJob, UnitKey
from .recipes import RECIPES, Recipe
from .reference import ReferenceTrainer

__all__ = ["JobResult", "RECIPES", "Recipe", "ReferenceTrainer", "TrainJob", "Trainer", "UnitKey"]
