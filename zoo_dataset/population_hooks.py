"""The population engine's hook interface: what a method changes in the batched training of ``M``
stacked models (extra parameters, a loss term, a projection, a layer's training output).

It lives apart from both sides: the methods (:mod:`zoo_dataset.methods`) implement the hooks and
the engine (:mod:`zoo_dataset.training.batched_ops`) calls them, so neither imports the other
(importing the method registry still pulls in no training engine). The hooks see the engine's
stacked models only through :class:`StackedModels`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from .layout import LayoutEntry, ParameterLayout

if TYPE_CHECKING:  # drawing code loads numba on first use; the hooks only name its type
    from .counter_rng import StepDraws


class StackedModels(Protocol):
    """What a hook sees of the engine's ``M`` stacked models (``training.batched_ops.PopulationNet``)."""

    layout: ParameterLayout
    size: int  # M
    device: torch.device
    flat_params: torch.Tensor  # [M, P]: every model's flat parameters

    def param(self, name: str) -> torch.Tensor:
        """One named parameter of all models, [M, *shape]."""
        ...

    def extra(self, name: str, layer: str) -> torch.Tensor:
        """One layer's slice of an extra parameter, [M, *shape of its entry]."""
        ...


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

    Every hook defaults to plain training. Hooks see the stacked models (:class:`StackedModels`:
    stacked parameters ``net.param(name)`` [M, ...], extra parameters ``net.extra(name, layer)``)
    and must compute what the method's per-model recipe computes, model by model, so that the engine and
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

    def eval_weight(self, net: StackedModels, layer: str, weight: torch.Tensor) -> torch.Tensor:
        """The weight a layer computes with outside training (VD: dropped weights as zeros)."""
        return weight

    def eval_bias(self, net: StackedModels, layer: str, bias: torch.Tensor) -> torch.Tensor:
        """The bias a layer computes with outside training (VD cnn_ard: dropped conv biases as zeros)."""
        return bias

    def noisy_output(self, net: StackedModels, layer: str, op: LayerOp, h: torch.Tensor, weight: torch.Tensor,
                     mean: torch.Tensor, draws: StepDraws) -> torch.Tensor:
        """A layer's training output given its deterministic output ``mean`` (VD: a sampled output)."""
        return mean

    def loss_term(self, net: StackedModels, epoch: int, n_train: int) -> torch.Tensor | None:
        """Added to the sum over models of each model's mean cross-entropy (VD: the weighted KL)."""
        return None

    def project_gradients(self, net: StackedModels, grads: list[torch.Tensor]) -> None:
        """Change the gradients in place before the optimizer step (MP: none where pruned)."""

    def project(self, net: StackedModels) -> None:
        """Restore an invariant after each optimizer step (MP: pruned weights stay exactly zero)."""

    def recorded(self, net: StackedModels) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The keep-masks [M, P] and log_alpha [M, P] of the current states (None where not stored)."""
        return None, None
