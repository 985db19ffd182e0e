"""Training: the per-model reference trainer and the batched population engine, over any method."""

from ..jobs import JobResult, Trainer, TrainJob, UnitKey
from .reference import ReferenceTrainer

__all__ = ["JobResult", "ReferenceTrainer", "TrainJob", "Trainer", "UnitKey"]
