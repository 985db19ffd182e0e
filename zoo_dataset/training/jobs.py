"""What a trainer is asked to do, and what it gives back.

Original training, masked fine-tuning and VD training are all one shape of work: start from a
state (or from the seed's init), train for some epochs, and record every epoch. A trainer takes a
batch of :class:`TrainJob` and yields one :class:`JobResult` per job, so the per-model reference
loop and a batched population engine are interchangeable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..data import ImageData
from ..specs import ModelConfig


@dataclass(frozen=True)
class UnitKey:
    """One unit of stage work: a model, and for MP the sparsity level (0.0 elsewhere)."""

    model_id: int
    level: float = 0.0


@dataclass
class TrainJob:
    key: UnitKey
    config: ModelConfig
    architecture: str
    kind: str  # a recipe name: "plain", "masked", "vd"
    epochs: int
    lr: float
    batch_size: int
    seed: int  # data order and dropout; initialisation uses config.seed
    initial: np.ndarray | None = None  # flat start state; None = initialise from config
    mask: np.ndarray | None = None  # fixed keep-mask over the flat vector (MP)
    reference_predictions: np.ndarray | None = None  # original's test predictions, for agreement
    options: dict[str, Any] = field(default_factory=dict)  # recipe options (e.g. VD kl warm-up)


@dataclass
class JobResult:
    key: UnitKey
    weights: np.ndarray  # [E+1, P] float32, epoch 0 first
    metrics: list[dict[str, float]]  # one row per epoch
    masks: np.ndarray | None = None  # [E+1, P] bool
    log_alpha: np.ndarray | None = None  # [E+1, P] float32
    test_predictions: np.ndarray | None = None  # final state's test predictions


EpochCallback = Callable[[int, int, int], None]  # (epoch done, epochs, models training together)


class Trainer(Protocol):
    def run(
        self, jobs: Sequence[TrainJob], data: ImageData, on_epoch: EpochCallback | None = None
    ) -> Iterator[JobResult]:
        """Train every job; yield each result as soon as it is final; report each finished epoch."""
