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
from ..layout import LayoutEntry, ParameterLayout
from ..population_hooks import LayerOp, PopulationHooks
from ..sparsify.variational import (
    BIAS_LOG_ALPHA,
    VariationalNet,
    VDVariant,
    conv_layers,
    flat_state,
    keep_mask,
    kl_approx,
    sampled_output,
    to_variational,
    variational_entries,
)
from ..specs import ModelConfig, VDSpec, ZooSpec
from .base import Method, RecordedState, StartStates, plain_from_state

VARIANT_NOTES = {
    "cnn_ard": "the original zoos' CNN_ARD, as the published twins",
    "elbo": "negative ELBO per sample, deterministic biases",
}


class VDHooks(PopulationHooks):
    """Sparse VD over stacked models, computing what :class:`VariationalNet` computes per model.

    ``log_sigma2`` [M, weights] and, where the variant noises conv biases, ``log_sigma2_bias``
    [M, conv biases] are the extra parameters.
    """

    def __init__(self, variant: VDVariant, layout: ParameterLayout, log_sigma2: torch.Tensor,
                 log_sigma2_bias: torch.Tensor | None, threshold: float, kl_factor: Callable[[int, int], float],
                 device: torch.device):
        self.variant, self.threshold, self.kl_factor = variant, threshold, kl_factor
        self.convs = conv_layers(layout)
        self.extras = {"log_sigma2": log_sigma2}
        if log_sigma2_bias is not None:
            self.extras["log_sigma2_bias"] = log_sigma2_bias
        self.prunable = variational_entries(layout, variant)
        # a step's variational parameters in one row: the weights, then the variational biases
        self.noisy = [(e, "log_sigma2") for e in layout.weight_entries()]
        self.noisy += [(e, "log_sigma2_bias") for e in noisy_bias_entries(layout, variant)]
        lo, hi = zip(*(variant.clamp(e.layer in self.convs) for e, _ in self.noisy), strict=True)
        sizes = torch.tensor([e.size for e, _ in self.noisy])
        self.clamp_lo, self.clamp_hi = (torch.tensor(b).repeat_interleave(sizes).to(device) for b in (lo, hi))
        self._step: _NoiseSide | None = None  # the training step's, from its first layer to its KL

    def extra_parameters(self) -> dict[str, torch.Tensor]:
        return self.extras

    def extra_entries(self, name: str, layout: ParameterLayout) -> list[LayoutEntry]:
        return noisy_bias_entries(layout, self.variant) if name == "log_sigma2_bias" else layout.weight_entries()

    def log_alpha(self, net, layer: str, kind: str = "weight") -> torch.Tensor:
        sigma = "log_sigma2" if kind == "weight" else "log_sigma2_bias"
        return self.variant.log_alpha(net.param(f"{layer}.{kind}"), net.extra(sigma, layer), layer in self.convs)

    def _drop(self, net, layer: str, kind: str, value: torch.Tensor) -> torch.Tensor:
        return torch.where(self.log_alpha(net, layer, kind) < self.threshold, value, torch.zeros_like(value))

    def eval_weight(self, net, layer: str, weight: torch.Tensor) -> torch.Tensor:
        return self._drop(net, layer, "weight", weight)

    def eval_bias(self, net, layer: str, bias: torch.Tensor) -> torch.Tensor:
        noisy = "log_sigma2_bias" in self.extras and layer in self.convs
        return self._drop(net, layer, "bias", bias) if noisy else bias

    def noisy_output(self, net, layer: str, op: LayerOp, h: torch.Tensor, weight: torch.Tensor,
                     mean: torch.Tensor, draws) -> torch.Tensor:
        if self._step is None or self._step.draws is not draws:  # the step's first layer
            self._step = _NoiseSide(self, net, draws)
        variance = op.apply(h * h, self._step.variance_weights[layer], self._step.variance_biases.get(layer))
        return sampled_output(mean, variance, op.normal(draws, mean), self.variant.var_eps)

    def loss_term(self, net, epoch: int, n_train: int) -> torch.Tensor:
        """The KL of every model's every variational parameter, weighted: one sum (the factor is the
        group's) over the log_alpha of the step's forward pass."""
        step, self._step = self._step or _NoiseSide(self, net, None), None
        return self.kl_factor(epoch, n_train) * kl_approx(step.log_alpha)

    @torch.no_grad()
    def recorded(self, net) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for e in net.layout.entries:  # as flat_state writes them
            if self.prunable[e.offset]:
                parts.append(self.log_alpha(net, e.layer, e.kind).reshape(net.size, -1))
            else:
                parts.append(torch.full((net.size, e.size), BIAS_LOG_ALPHA, device=net.device))
        log_alpha = torch.cat(parts, dim=1).cpu().numpy().astype(np.float32)
        return keep_mask(log_alpha, self.prunable, self.threshold), log_alpha


def noisy_bias_entries(layout: ParameterLayout, variant: VDVariant) -> list[LayoutEntry]:
    """The bias entries ``variant`` makes variational (cnn_ard: the conv layers'), in layout order."""
    if not variant.conv_bias_noise:
        return []
    convs = conv_layers(layout)
    return [e for e in layout.entries if e.kind == "bias" and e.layer in convs]


class _NoiseSide:
    """One training step's ``log_alpha`` [M, variational parameters] and the variance weights
    ``alpha * theta^2`` (and conv biases' ``alpha_b * b^2``) per layer, computed for all layers at
    once: per layer they were ~60 small autograd ops a step."""

    def __init__(self, hooks: VDHooks, net, draws):
        self.draws = draws  # the step's (StepDraws): a new step computes anew
        theta = torch.cat([net.param(e.name).reshape(net.size, -1) for e, _ in hooks.noisy], dim=1)
        sigma = torch.cat([net.extra(name, e.layer).reshape(net.size, -1) for e, name in hooks.noisy], dim=1)
        self.log_alpha = torch.clamp(hooks.variant.raw_log_alpha(theta, sigma), hooks.clamp_lo, hooks.clamp_hi)
        parts = (torch.exp(self.log_alpha) * theta * theta).split([e.size for e, _ in hooks.noisy], dim=1)
        self.variance_weights: dict[str, torch.Tensor] = {}
        self.variance_biases: dict[str, torch.Tensor] = {}
        for (e, _), part in zip(hooks.noisy, parts, strict=True):
            target = self.variance_weights if e.kind == "weight" else self.variance_biases
            target[e.layer] = part.view(net.size, *e.shape)


class VariationalDropout(Method):
    """Converts the start state to VD layers and minimises the spec's VD objective."""

    name = "vd"
    label = "VD"
    description = "sparse variational-dropout twins trained from each original's last state"
    arrays = ("weights", "masks", "log_alpha")
    order = 20

    def epochs(self, spec: ZooSpec) -> int:
        return spec.vd.epochs

    def settings(self, spec: ZooSpec) -> str:
        return f"variant {spec.vd.variant}: {VARIANT_NOTES[spec.vd.variant]}"

    def jobs(self, spec: ZooSpec, keys: list[UnitKey], configs: dict[int, ModelConfig], starts: StartStates,
             layout: ParameterLayout) -> list[TrainJob]:
        vd = spec.vd
        options = {"threshold": vd.threshold, "kl_warmup_epochs": vd.kl_warmup_epochs, "variant": vd.variant}
        return [
            TrainJob(key=k, config=configs[k.model_id], architecture=spec.architecture, method=self.name,
                     epochs=vd.epochs, lr=vd.lr_for(configs[k.model_id]), batch_size=spec.batch_size,
                     seed=configs[k.model_id].seed, initial=starts[k.model_id][0],
                     reference_predictions=starts[k.model_id][1], options=dict(options))
            for k in keys
        ]

    def build(self, job: TrainJob, channels: int) -> nn.Module:
        """Job options: ``variant``, ``threshold`` and ``kl_warmup_epochs`` (see :class:`VDSpec`)."""
        return to_variational(
            plain_from_state(job, channels),
            variant=str(job.options.get("variant", VDSpec.variant)),
            epochs=job.epochs,
            threshold=float(job.options.get("threshold", VDSpec.threshold)),
            kl_warmup_epochs=int(job.options.get("kl_warmup_epochs", VDSpec.kl_warmup_epochs)),
        )

    def loss(self, model: VariationalNet, logits: torch.Tensor, y: torch.Tensor, n_train: int,
             epoch: int) -> torch.Tensor:
        return model.objective(logits, y, n_train, epoch)

    def state(self, model: VariationalNet) -> RecordedState:
        return flat_state(model)

    def population_hooks(self, models: list[VariationalNet], jobs: list[TrainJob],
                         device: torch.device) -> VDHooks:
        layout = ParameterLayout.from_module(models[0])
        variant = models[0].variant
        layers = [dict(m.vd_layers()) for m in models]
        log_sigma2 = torch.stack([torch.cat([ly[e.layer].log_sigma2.detach().reshape(-1)
                                             for e in layout.weight_entries()]) for ly in layers])
        biases = noisy_bias_entries(layout, variant)
        log_sigma2_bias = torch.stack([torch.cat([ly[e.layer].log_sigma2_bias.detach().reshape(-1) for e in biases])
                                       for ly in layers]) if biases else None
        threshold = next(iter(layers[0].values())).threshold
        return VDHooks(variant, layout, log_sigma2, log_sigma2_bias, threshold, models[0].kl_factor, device)


METHOD = VariationalDropout()
