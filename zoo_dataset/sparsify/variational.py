"""Sparse variational dropout (Molchanov, Ashukha, Vetrov 2017) for the zoos' CNNs.

Every weight ``theta`` gets a ``log_sigma2`` (multiplicative noise variance ``alpha = sigma^2 /
theta^2``). Training samples layer *outputs* with the local reparameterization trick; eval mode
drops the weights whose ``log_alpha`` reaches the threshold and uses the mean weights otherwise.
Biases stay deterministic and are never pruned.

The VD layers subclass ``nn.Conv2d`` / ``nn.Linear`` and keep the names ``weight`` and ``bias``,
so a converted CNN has the same :class:`~zoo_dataset.layout.ParameterLayout` as the plain one:
``weight`` (theta) is what the store records, ``log_sigma2`` is extra.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..counter_rng import active_draws
from ..layout import ParameterLayout
from ..specs import VD_KL_OBJECTIVES, VD_THRESHOLD, KLObjective

LOG_SIGMA2_INIT = -10.0  # as the reference implementations (pytorch_ard, the original zoos' code)
LOG_ALPHA_MIN, LOG_ALPHA_MAX = -10.0, 10.0  # one clip range for conv and linear layers
BIAS_LOG_ALPHA = LOG_ALPHA_MIN  # what the flat log_alpha vector holds at bias positions
THETA_EPS = 1e-8  # keeps log(theta^2) finite at theta = 0
VAR_EPS = 1e-8  # keeps sqrt(variance) differentiable where the variance is 0
ORIGINAL_KL_RAMP = 0.01 / 25  # per epoch: the original zoos' min(1, 0.01 * epoch / 25)
K1, K2, K3 = 0.63576, 1.87320, 1.48695  # Molchanov et al.'s fit of the negative KL


def log_alpha_of(theta: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    """``log sigma^2 - log theta^2``, clipped to [LOG_ALPHA_MIN, LOG_ALPHA_MAX]."""
    return torch.clamp(log_sigma2 - torch.log(theta * theta + THETA_EPS), LOG_ALPHA_MIN, LOG_ALPHA_MAX)


def kl_approx(log_alpha: torch.Tensor) -> torch.Tensor:
    """Summed KL(q || log-uniform prior) with Molchanov et al.'s approximation (eq. 14).

    ``-KL = k1 sigmoid(k2 + k3 log_alpha) - 0.5 log(1 + 1/alpha) - k1`` per weight.
    """
    neg_kl = K1 * torch.sigmoid(K2 + K3 * log_alpha) - 0.5 * F.softplus(-log_alpha) - K1
    return -neg_kl.sum()


class _SampledOutput(torch.autograd.Function):
    """``mean + sqrt(variance + VAR_EPS) * noise`` with a backward of its own.

    The forward also computes ``noise / (2 sqrt(variance + VAR_EPS))``, the output's derivative
    by the variance and all that the backward keeps. On CPU one compiled pass does both
    (:mod:`.sampling_cpu`: memory traffic, not arithmetic, is the cost of sampling there); tensor
    ops elsewhere. Autograd's chain of four ops allocated six layer-sized temporaries.
    """

    @staticmethod
    def forward(ctx, mean: torch.Tensor, variance: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out, d_variance = torch.empty_like(mean), torch.empty_like(noise)
        if mean.device.type != "cpu" or not _sample_compiled(mean, variance, noise, out, d_variance):
            std = variance.add(VAR_EPS).sqrt_()
            torch.addcmul(mean, std, noise, out=out)
            torch.div(noise, std, out=d_variance).mul_(0.5)
        ctx.save_for_backward(d_variance)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        (d_variance,) = ctx.saved_tensors
        return grad, grad * d_variance, None


def _sample_compiled(mean: torch.Tensor, variance: torch.Tensor, noise: torch.Tensor, out: torch.Tensor,
                     d_variance: torch.Tensor) -> bool:
    from .sampling_cpu import sample_compiled  # numba loads on first use: readers of a store never need it

    return sample_compiled(mean, variance, noise, out, d_variance)


def sampled_output(mean: torch.Tensor, variance: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One Gaussian sample per output given its mean, variance and standard normal ``noise``
    (the local reparameterization trick); the per-model layers and the engine both call it."""
    return _SampledOutput.apply(mean, variance, noise)


class _VariationalMixin:
    """Shared by the conv and linear VD layers: parameters, log_alpha, KL and the eval weight."""

    weight: nn.Parameter
    threshold: float

    def _init_variational(self, threshold: float) -> None:
        self.log_sigma2 = nn.Parameter(torch.full_like(self.weight, LOG_SIGMA2_INIT))
        self.threshold = threshold

    @property
    def log_alpha(self) -> torch.Tensor:
        return log_alpha_of(self.weight, self.log_sigma2)

    def keep_mask(self) -> torch.Tensor:
        return self.log_alpha < self.threshold

    def kl(self) -> torch.Tensor:
        return kl_approx(self.log_alpha)

    def sparse_weight(self) -> torch.Tensor:
        """Mean weights with the dropped ones (``log_alpha >= threshold``) set to zero."""
        return torch.where(self.keep_mask(), self.weight, torch.zeros_like(self.weight))

    def _sample(self, mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
        """One Gaussian sample per output: the active step's draws (the trainers), else torch's RNG."""
        draws = active_draws()
        eps = torch.randn_like(mean) if draws is None else draws.normal(tuple(mean.shape))[0]
        return sampled_output(mean, variance, eps)


class VDConv2d(_VariationalMixin, nn.Conv2d):
    """Conv2d with sparse VD: one convolution for the mean, one for the variance."""

    def __init__(self, *args, threshold: float = VD_THRESHOLD, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_variational(threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self._conv_forward(x, self.sparse_weight(), self.bias)
        mean = self._conv_forward(x, self.weight, self.bias)
        variance = self._conv_forward(x * x, torch.exp(self.log_alpha) * self.weight * self.weight, None)
        return self._sample(mean, variance)


class VDLinear(_VariationalMixin, nn.Linear):
    """Linear with sparse VD: the output's mean and variance, then one Gaussian sample."""

    def __init__(self, *args, threshold: float = VD_THRESHOLD, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_variational(threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.sparse_weight(), self.bias)
        mean = F.linear(x, self.weight, self.bias)
        variance = F.linear(x * x, torch.exp(self.log_alpha) * self.weight * self.weight)
        return self._sample(mean, variance)


VDLayer = VDConv2d | VDLinear
PLAIN_LAYERS = (nn.Conv2d, nn.Linear)


def _vd_copy(layer: nn.Module, threshold: float) -> VDLayer:
    if isinstance(layer, nn.Conv2d):
        vd: VDLayer = VDConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                               padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                               bias=layer.bias is not None, threshold=threshold)
    else:
        vd = VDLinear(layer.in_features, layer.out_features, bias=layer.bias is not None, threshold=threshold)
    with torch.no_grad():
        vd.weight.copy_(layer.weight)
        if layer.bias is not None:
            vd.bias.copy_(layer.bias)
    return vd


class VariationalNet(nn.Sequential):
    """A zoo CNN whose conv/linear children are VD layers; other children (dropout...) are kept.

    It carries the KL weighting of its training objective, so a recipe needs nothing else:
    ``kl_objective`` "elbo" (the negative ELBO per sample, optional linear warm-up) or "original"
    (the original zoos' code: the summed KL weighted by ``0.01 * (epoch - 1) / 25``, no warm-up).
    """

    def __init__(self, children: OrderedDict[str, nn.Module], kl_warmup_epochs: int = 0,
                 kl_objective: KLObjective = "elbo"):
        super().__init__(children)
        if kl_objective not in VD_KL_OBJECTIVES:
            raise ValueError(f"unknown VD KL objective {kl_objective!r}; choose one of {', '.join(VD_KL_OBJECTIVES)}")
        self.kl_warmup_epochs = kl_warmup_epochs
        self.kl_objective = kl_objective

    def vd_layers(self) -> list[tuple[str, VDLayer]]:
        return [(n, m) for n, m in self.named_children() if isinstance(m, VDConv2d | VDLinear)]

    def kl(self) -> torch.Tensor:
        return sum(layer.kl() for _, layer in self.vd_layers())

    def kl_factor(self, epoch: int, n_train: int) -> float:
        """What the summed KL is multiplied by in the loss of epoch ``epoch`` (counted from 1).

        "elbo": ``w / N_train`` with the linear warm-up ``w = min(1, epoch / warm-up)`` (1 without).
        "original": ``min(1, 0.01 * (epoch - 1) / 25)``, the ramp of the original zoos' code (its
        epochs counted from 0), reaching 0.0096 after 25 epochs.
        """
        if self.kl_objective == "original":
            return min(1.0, ORIGINAL_KL_RAMP * (epoch - 1))
        warmup = 1.0 if self.kl_warmup_epochs <= 0 else min(1.0, epoch / self.kl_warmup_epochs)
        return warmup / n_train

    def objective(self, logits: torch.Tensor, y: torch.Tensor, n_train: int, epoch: int) -> torch.Tensor:
        """The training loss: mean cross-entropy + ``kl_factor`` x summed KL."""
        return F.cross_entropy(logits, y) + self.kl_factor(epoch, n_train) * self.kl()


def to_variational(
    model: nn.Module, threshold: float = VD_THRESHOLD, kl_warmup_epochs: int = 0, kl_objective: KLObjective = "elbo"
) -> VariationalNet:
    """A VD copy of a plain ``nn.Sequential`` CNN: same weights and biases, ``log_sigma2`` at -10."""
    children = OrderedDict(
        (name, _vd_copy(child, threshold) if isinstance(child, PLAIN_LAYERS) else copy.deepcopy(child))
        for name, child in model.named_children()
    )
    vd = VariationalNet(children, kl_warmup_epochs, kl_objective)
    return vd.train(model.training)


def to_plain(model: VariationalNet) -> nn.Sequential:
    """The pruned deterministic CNN that VD's eval mode computes: dropped weights are exact zeros."""
    children: OrderedDict[str, nn.Module] = OrderedDict()
    for name, child in model.named_children():
        if isinstance(child, VDConv2d):
            plain: nn.Module = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                                         stride=child.stride, padding=child.padding, dilation=child.dilation,
                                         groups=child.groups, bias=child.bias is not None)
        elif isinstance(child, VDLinear):
            plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
        else:
            children[name] = copy.deepcopy(child)
            continue
        with torch.no_grad():
            plain.weight.copy_(child.sparse_weight())
            if child.bias is not None:
                plain.bias.copy_(child.bias)
        children[name] = plain
    return nn.Sequential(children).train(model.training)


@torch.no_grad()
def flat_state(model: VariationalNet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(theta, keep-mask, log_alpha) as flat vectors in the plain parameter layout.

    Bias positions hold ``BIAS_LOG_ALPHA`` and are always kept. The mask is computed from the
    float32 log_alpha vector itself, so ``mask == (log_alpha < threshold)`` holds exactly.
    """
    layout = ParameterLayout.from_module(model)
    log_alpha = np.full(layout.num_params, BIAS_LOG_ALPHA, dtype=np.float32)
    thresholds = np.full(layout.num_params, np.inf, dtype=np.float32)
    layers = dict(model.vd_layers())
    for entry in layout.weight_entries():
        layer = layers[entry.layer]
        log_alpha[entry.slice] = layer.log_alpha.reshape(-1).cpu().numpy()
        thresholds[entry.slice] = layer.threshold
    theta = layout.flatten_module(model).numpy().astype(np.float32)
    return theta, log_alpha < thresholds, log_alpha
