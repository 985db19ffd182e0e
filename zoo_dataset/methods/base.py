"""What a method is: everything that makes one population of a zoo, in one object.

A :class:`Method` owns its units and levels, how a unit's start state becomes a
:class:`~zoo_dataset.jobs.TrainJob`, the per-model recipe the reference trainer runs (build,
loss, after-step, state), the batched hooks the population engine runs
(:class:`~zoo_dataset.population_hooks.PopulationHooks`), the arrays the store keeps for it and
its labels. The engine, the stages, the store, the loaders, the card and the report ask the registry
(:mod:`zoo_dataset.methods`) and never name a method.

The defaults here are plain training from a given state (cross-entropy, nothing after a step,
weights only), so a method overrides only what it changes. The batched form has no default: a
method must say how the engine runs it (:meth:`Method.population_hooks`), or it is trained one
model at a time by the reference engine only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..architectures import build_model
from ..errors import ZooSpecError
from ..jobs import TrainJob, UnitKey
from ..layout import ParameterLayout
from ..population_hooks import PopulationHooks
from ..specs import ModelConfig, ZooSpec

StartStates = dict[int, tuple[np.ndarray, np.ndarray]]  # model id -> (last state, its test predictions)
RecordedState = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]  # (weights, keep-mask, log_alpha)


def twin_seed(model_seed: int, level: float) -> int:
    """Data-order seed of one (model, level) twin: distinct per level, reproducible from the model seed."""
    return int(np.random.SeedSequence([int(model_seed), round(level * 1_000_000)]).generate_state(1)[0])


def plain_from_state(job: TrainJob, channels: int) -> nn.Module:
    """A plain CNN of ``job``'s architecture and factors holding ``job.initial``."""
    if job.initial is None:
        raise ZooSpecError(f"{job.method} job for model {job.key.model_id} needs a start state")
    c = job.config
    model = build_model(job.architecture, channels, c.activation, c.dropout)
    ParameterLayout.from_module(model).load_into(model, job.initial)
    return model


class Method:
    """One population of a zoo and everything that makes it. Subclasses set the class attributes.

    ``name`` is the population's name in the store, its stage name in ``zoo-build --stages`` and
    the loaders' ``method=``.
    """

    name: ClassVar[str]
    label: ClassVar[str]  # in the report's figures and tables
    description: ClassVar[str]  # one line of the dataset card
    arrays: ClassVar[tuple[str, ...]] = ("weights",)  # what the store keeps per state
    requires: ClassVar[str | None] = "original"  # population whose last states the units start from
    default: ClassVar[bool] = True  # built by ``zoo-build`` unless --stages says otherwise
    order: ClassVar[int] = 100  # pipeline position: a method runs after what it requires

    # ------------------------------------------------------------------ units
    def levels(self, spec: ZooSpec) -> list[float]:
        """Sparsity levels with a unit each (0.0: a method without levels)."""
        return [0.0]

    def epochs(self, spec: ZooSpec) -> int:
        raise NotImplementedError

    def details(self, levels: Sequence[float], epochs: int) -> str:
        """What the card adds to the description: the recorded levels and epochs."""
        if len(levels) > 1:
            return f"levels {', '.join(f'{lv:.0%}' for lv in levels)}, {epochs} epochs"
        return f"{epochs} epochs"

    def settings(self, spec: ZooSpec) -> str:
        """The spec's choices that tell this population's numbers apart from another build's of the
        same method, for the card and the report ('' where there is none; VD: its variant)."""
        return ""

    def jobs(self, spec: ZooSpec, keys: list[UnitKey], configs: dict[int, ModelConfig], starts: StartStates,
             layout: ParameterLayout) -> list[TrainJob]:
        """One job per unit; ``starts`` holds the required population's last states."""
        raise NotImplementedError

    # ------------------------------------------------------------------ per-model recipe
    def build(self, job: TrainJob, channels: int) -> nn.Module:
        """The model at epoch 0 (on CPU). Data order and noise are counter-based
        (:mod:`zoo_dataset.counter_rng`), keyed by the job's seed, method and level."""
        return plain_from_state(job, channels)

    def noise_stream(self) -> str:
        """The counter stream of the method's training randomness (data order, dropout masks, noise;
        :mod:`zoo_dataset.counter_rng`): the method's name, unless it must draw as another does."""
        return self.name

    def layout_module(self, model: nn.Module) -> nn.Module:
        """The module whose conv/linear children define the stored parameter layout."""
        return model

    def loss(self, model: nn.Module, logits: torch.Tensor, y: torch.Tensor, n_train: int,
             epoch: int) -> torch.Tensor:
        """The training objective of one batch (``epoch`` counts from 1)."""
        return F.cross_entropy(logits, y)

    def after_step(self, model: nn.Module, job: TrainJob) -> None:
        """Called after every optimizer step (e.g. to keep pruned weights at zero)."""

    def state(self, model: nn.Module) -> RecordedState:
        """(flat weights, keep-mask or None, log_alpha or None) in the plain layout."""
        return ParameterLayout.from_module(model).flatten_module(model).numpy(), None, None

    # ------------------------------------------------------------------ batched form
    def population_hooks(self, models: list[nn.Module], jobs: list[TrainJob],
                         device: torch.device) -> PopulationHooks:
        """The engine's hooks for a group of built ``models``; a method without them is refused."""
        raise ZooSpecError(
            f"method {self.name!r} has no batched form (Method.population_hooks); "
            "train it with the reference engine (zoo-build --engine reference)"
        )
