"""What a trainer is asked to do, and what it gives back.

Original training, masked fine-tuning and VD training are all one shape of work: start from a
state (or from the seed's init), train for some epochs, and record every epoch. A trainer takes a
batch of :class:`TrainJob` and yields one :class:`JobResult` per job, so the per-model reference
loop and a batched population engine are interchangeable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .specs import ModelConfig

if TYPE_CHECKING:  # the readers stay unimported for code that only describes work (the store, the loaders)
    from .data import ImageData


@dataclass(frozen=True)
class UnitKey:
    """One unit of stage work: a model, and for MP the sparsity level (0.0 elsewhere)."""

    model_id: int
    level: float = 0.0


@dataclass
class TrainJob:
    """One unit of training: which model, which method, from which state, for how long.

    ``method`` names a registered method (``zoo_dataset.methods``), which builds the model and
    knows its loss; everything else here is per-unit data.
    """

    key: UnitKey
    config: ModelConfig
    architecture: str
    method: str  # a registered method: "original", "mp", "vd", ...
    epochs: int
    lr: float
    batch_size: int
    seed: int  # data order and dropout; initialisation uses config.seed
    initial: np.ndarray | None = None  # flat start state; None = initialise from config
    mask: np.ndarray | None = None  # fixed keep-mask over the flat vector (MP)
    reference_predictions: np.ndarray | None = None  # original's test predictions, for agreement
    options: dict[str, Any] = field(default_factory=dict)  # method options (e.g. VD kl warm-up)


@dataclass
class JobResult:
    """Every recorded state of one unit, epoch 0 first, and the metrics of each state."""

    key: UnitKey
    weights: np.ndarray  # [E+1, P] float32, epoch 0 first
    metrics: list[dict[str, float]]  # one row per epoch
    masks: np.ndarray | None = None  # [E+1, P] bool
    log_alpha: np.ndarray | None = None  # [E+1, P] float32
    test_predictions: np.ndarray | None = None  # final state's test predictions


EpochCallback = Callable[[int, int, int], None]  # (epoch done, epochs, models training together)


class Trainer(Protocol):
    """Turns jobs into results; where and how (one model at a time, batched, remote) is its business."""

    def run(
        self, jobs: Sequence[TrainJob], data: ImageData, on_epoch: EpochCallback | None = None
    ) -> Iterator[JobResult]:
        """Train every job; yield each result as soon as it is final; report each finished epoch."""
