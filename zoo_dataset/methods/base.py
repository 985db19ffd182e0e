"""What a method is: everything that makes one population of a zoo, in one object.

A :class:`Method` owns its units and levels, how a unit's start state becomes a
:class:`~zoo_dataset.jobs.TrainJob`, the per-model recipe the reference trainer runs (build,
loss, after-step, state), the batched hooks the population engine runs
(:class:`PopulationHooks`), the arrays the store keeps for it and its labels. The engine, the
stages, the store, the loaders, the card and the report ask the registry
(:mod:`zoo_dataset.methods`) and never name a method.

The defaults here are plain training from a given state (cross-entropy, nothing after a step,
weights only), so a method overrides only what it changes. The batched form has no default: a
method must say how the engine runs it (:meth:`Method.population_hooks`), or it is trained one
model at a time by the reference engine only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..architectures import build_model
from ..errors import ZooSpecError
from ..jobs import TrainJob, UnitKey
from ..layout import LayoutEntry, ParameterLayout
from ..specs import ModelConfig, ZooSpec

if TYPE_CHECKING:  # the engine's types; importing them here would pull training code into every reader
    from ..counter_rng import StepDraws
    from ..training.batched_ops import PopulationNet

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


@dataclass(frozen=True)
class LayerOp:
    """How one stacked layer computes, handed to hooks that add to its output (VD's variance pass).

    ``apply(input, weight, bias)`` runs the layer's op over all models; ``model_major(output)``
    views a tensor of the layer's output layout as ``[M, *noise_shape]``, one model's output per
    row, so that ``normal`` draws the step's next standard normals straight into that layout.
    """

    apply: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    noise_shape: tuple[int, ...]
    model_major: Callable[[torch.Tensor], torch.Tensor]

    def normal(self, draws: StepDraws, like: torch.Tensor) -> torch.Tensor:
        """Standard normals laid out as ``like`` (a layer output): model ``m``'s draw in its block."""
        out = torch.empty_like(like)
        draws.normal(self.noise_shape, out=self.model_major(out))
        return out


class PopulationHooks:
    """What a method changes in the population engine's training of ``M`` stacked models.

    Every hook defaults to plain training. Hooks see the :class:`PopulationNet` (stacked
    parameters ``net.param(name)`` [M, ...], extra parameters ``net.extra(name, layer)``) and must
    compute what the method's per-model recipe computes, model by model, so that the engine and
    the reference trainer agree.
    """


    def extra_parameters(self) -> dict[str, torch.Tensor]:
        """Stacked extra parameters trained with the weights: name -> [M, n], laid out as
        :meth:`extra_entries` says (default: one per weight of all layers)."""
        return {}

    def extra_entries(self, name: str, layout: ParameterLayout) -> list[LayoutEntry]:
        """The parameters the extra parameter ``name`` has one value per, in its storage order
        (VD: ``log_sigma2`` per weight; ``log_sigma2_bias`` per conv bias)."""
        return layout.weight_entries()

    def eval_weight(self, net: PopulationNet, layer: str, weight: torch.Tensor) -> torch.Tensor:
        """The weight a layer computes with outside training (VD: dropped weights as zeros)."""
        return weight

    def eval_bias(self, net: PopulationNet, layer: str, bias: torch.Tensor) -> torch.Tensor:
        """The bias a layer computes with outside training (VD cnn_ard: dropped conv biases as zeros)."""
        return bias

    def noisy_output(self, net: PopulationNet, layer: str, op: LayerOp, h: torch.Tensor, weight: torch.Tensor,
                     mean: torch.Tensor, draws: StepDraws) -> torch.Tensor:
        """A layer's training output given its deterministic output ``mean`` (VD: a sampled output)."""
        return mean

    def loss_term(self, net: PopulationNet, epoch: int, n_train: int) -> torch.Tensor | None:
        """Added to the sum over models of each model's mean cross-entropy (VD: the weighted KL)."""
        return None

    def project_gradients(self, net: PopulationNet, grads: list[torch.Tensor]) -> None:
        """Change the gradients in place before the optimizer step (MP: none where pruned)."""

    def project(self, net: PopulationNet) -> None:
        """Restore an invariant after each optimizer step (MP: pruned weights stay exactly zero)."""

    def recorded(self, net: PopulationNet) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The keep-masks [M, P] and log_alpha [M, P] of the current states (None where not stored)."""
        return None, None


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
