"""Sparse variational-dropout twins trained from each original's last state.

Epoch 0 is the converted original before any VD step; the twin keeps the original's model id,
optimizer and weight decay, and uses the spec's VD learning rate, epochs and KL weighting. The
layers and the objective are :mod:`zoo_dataset.sparsify.variational`; the engine's form adds a
stacked ``log_sigma2`` per weight, samples each layer's output with the local reparameterisation
trick, drops weights at the threshold outside training and adds the weighted KL to the loss.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..jobs import TrainJob, UnitKey
from ..layout import ParameterLayout
from ..sparsify.variational import (
    BIAS_LOG_ALPHA,
    VariationalNet,
    flat_state,
    kl_approx,
    log_alpha_of,
    sampled_output,
    to_variational,
)
from ..specs import ModelConfig, VDSpec, ZooSpec
from .base import LayerOp, Method, PopulationHooks, RecordedState, StartStates, plain_from_state


class VDHooks(PopulationHooks):
    """Sparse VD over stacked models, computing what :class:`VariationalNet` computes per model."""

    def __init__(self, log_sigma2: torch.Tensor, threshold: float, kl_factor: Callable[[int, int], float]):
        self.log_sigma2, self.threshold, self.kl_factor = log_sigma2, threshold, kl_factor
        self._step: _WeightSide | None = None  # the training step's, from its first layer to its KL

    def extra_parameters(self) -> dict[str, torch.Tensor]:
        return {"log_sigma2": self.log_sigma2}

    def log_alpha(self, net, layer: str) -> torch.Tensor:
        return log_alpha_of(net.param(f"{layer}.weight"), net.extra("log_sigma2", layer))

    def eval_weight(self, net, layer: str, weight: torch.Tensor) -> torch.Tensor:
        return torch.where(self.log_alpha(net, layer) < self.threshold, weight, torch.zeros_like(weight))

    def noisy_output(self, net, layer: str, op: LayerOp, h: torch.Tensor, weight: torch.Tensor,
                     mean: torch.Tensor, draws) -> torch.Tensor:
        if self._step is None or self._step.draws is not draws:  # the step's first layer
            self._step = _WeightSide(net, draws)
        variance = op.apply(h * h, self._step.variance_weights[layer], None)
        return sampled_output(mean, variance, op.normal(draws, mean))

    def loss_term(self, net, epoch: int, n_train: int) -> torch.Tensor:
        """The KL of every model's every layer, weighted: one sum (the factor is the group's) over
        the log_alpha of the step's forward pass."""
        step, self._step = self._step or _WeightSide(net, None), None
        return self.kl_factor(epoch, n_train) * kl_approx(step.log_alpha)

    @torch.no_grad()
    def recorded(self, net) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for e in net.layout.entries:  # bias positions hold BIAS_LOG_ALPHA, as flat_state writes them
            if e.kind == "weight":
                parts.append(self.log_alpha(net, e.layer).reshape(net.size, -1))
            else:
                parts.append(torch.full((net.size, e.size), BIAS_LOG_ALPHA, device=net.device))
        log_alpha = torch.cat(parts, dim=1).cpu().numpy().astype(np.float32)
        masks = np.where(net.layout.weight_mask(), log_alpha < self.threshold, True)
        return masks, log_alpha


class _WeightSide:
    """One training step's ``log_alpha`` [M, weights] and variance weights ``alpha * theta^2`` per
    layer, computed for all layers at once: per layer they were ~60 small autograd ops a step."""

    def __init__(self, net, draws):
        self.draws = draws  # the step's (StepDraws): a new step computes anew
        entries = net.layout.weight_entries()
        theta = torch.cat([net.param(f"{e.layer}.weight").reshape(net.size, -1) for e in entries], dim=1)
        log_sigma2 = torch.cat([net.extra("log_sigma2", e.layer).reshape(net.size, -1) for e in entries], dim=1)
        self.log_alpha = log_alpha_of(theta, log_sigma2)
        flat = torch.exp(self.log_alpha) * theta * theta
        parts = flat.split([e.size for e in entries], dim=1)
        self.variance_weights = {e.layer: part.view(net.size, *e.shape) for e, part in zip(entries, parts, strict=True)}


class VariationalDropout(Method):
    """Converts the start state to VD layers and minimises the spec's VD objective."""

    name = "vd"
    label = "VD"
    description = "sparse variational-dropout twins trained from each original's last state"
    arrays = ("weights", "masks", "log_alpha")
    order = 20

    def epochs(self, spec: ZooSpec) -> int:
        return spec.vd.epochs

    def jobs(self, spec: ZooSpec, keys: list[UnitKey], configs: dict[int, ModelConfig], starts: StartStates,
             layout: ParameterLayout) -> list[TrainJob]:
        vd = spec.vd
        options = {"threshold": vd.threshold, "kl_warmup_epochs": vd.kl_warmup_epochs, "kl_objective": vd.kl_objective}
        return [
            TrainJob(key=k, config=configs[k.model_id], architecture=spec.architecture, method=self.name,
                     epochs=vd.epochs, lr=vd.lr_for(configs[k.model_id]), batch_size=spec.batch_size,
                     seed=configs[k.model_id].seed, initial=starts[k.model_id][0],
                     reference_predictions=starts[k.model_id][1], options=dict(options))
            for k in keys
        ]

    def build(self, job: TrainJob, channels: int) -> nn.Module:
        """Job options: ``threshold``, ``kl_warmup_epochs`` and ``kl_objective`` (see :class:`VDSpec`)."""
        model = to_variational(
            plain_from_state(job, channels),
            threshold=float(job.options.get("threshold", VDSpec.threshold)),
            kl_warmup_epochs=int(job.options.get("kl_warmup_epochs", VDSpec.kl_warmup_epochs)),
            kl_objective=str(job.options.get("kl_objective", VDSpec.kl_objective)),
        )
        return model

    def loss(self, model: VariationalNet, logits: torch.Tensor, y: torch.Tensor, n_train: int,
             epoch: int) -> torch.Tensor:
        return model.objective(logits, y, n_train, epoch)

    def state(self, model: VariationalNet) -> RecordedState:
        return flat_state(model)

    def population_hooks(self, models: list[VariationalNet], jobs: list[TrainJob],
                         device: torch.device) -> VDHooks:
        layout = ParameterLayout.from_module(models[0])
        layers = [dict(m.vd_layers()) for m in models]
        log_sigma2 = torch.stack([torch.cat([ly[e.layer].log_sigma2.detach().reshape(-1)
                                             for e in layout.weight_entries()]) for ly in layers])
        threshold = next(iter(layers[0].values())).threshold
        return VDHooks(log_sigma2, threshold, models[0].kl_factor)


METHOD = VariationalDropout()
