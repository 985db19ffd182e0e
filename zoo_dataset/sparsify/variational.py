"""Sparse variational dropout (Molchanov, Ashukha, Vetrov 2017) for the zoos' CNNs, in two variants.

Every weight ``theta`` gets a ``log_sigma2`` (multiplicative noise variance ``alpha = sigma^2 /
theta^2``). Training samples layer *outputs* with the local reparameterization trick; eval mode
drops the weights whose ``log_alpha`` reaches the threshold and uses the mean weights otherwise.
A :class:`VDVariant` holds what the two variants do differently: ``cnn_ard`` is the original
zoos' ``CNN_ARD`` (its log-alpha, clamps and epsilons; conv biases noised, penalised and pruned
like weights; the original KL ramp), ``elbo`` the toolkit's earlier form (deterministic biases,
the negative ELBO per sample). docs/variational-dropout.md lists the differences.

The VD layers subclass ``nn.Conv2d`` / ``nn.Linear`` and keep the names ``weight`` and ``bias``,
so a converted CNN has the same :class:`~zoo_dataset.layout.ParameterLayout` as the plain one:
``weight`` (theta) is what the store records, ``log_sigma2`` (and ``log_sigma2_bias``) are extra.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..counter_rng import active_draws
from ..layout import ParameterLayout
from ..specs import VD_THRESHOLD

LOG_SIGMA2_INIT = -10.0  # as the reference implementations (pytorch_ard, the original zoos' code)
BIAS_LOG_ALPHA = -10.0  # what the flat log_alpha vector holds where nothing is noised (linear biases...)
K1, K2, K3 = 0.63576, 1.87320, 1.48695  # Molchanov et al.'s fit of the negative KL


@dataclass(frozen=True)
class VDVariant:
    """What one VD variant computes: log-alpha, its clamps, the variance epsilon, whether conv
    biases are variational, and the KL's weight in the loss."""

    name: str
    conv_clamp: tuple[float, float]
    linear_clamp: tuple[float, float]
    var_eps: float  # inside sqrt(variance + eps): keeps the square root differentiable at 0
    conv_bias_noise: bool  # conv biases get log_sigma2_bias, noise, a KL term and pruning

    def raw_log_alpha(self, theta: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def clamp(self, conv: bool) -> tuple[float, float]:
        return self.conv_clamp if conv else self.linear_clamp

    def log_alpha(self, theta: torch.Tensor, log_sigma2: torch.Tensor, conv: bool) -> torch.Tensor:
        """The clamped log-alpha of a conv (``conv``) or linear layer's parameters."""
        return torch.clamp(self.raw_log_alpha(theta, log_sigma2), *self.clamp(conv))

    def kl_factor(self, epoch: int, epochs: int, n_train: int, warmup_epochs: int) -> float:
        """What the summed KL is multiplied by in the loss of epoch ``epoch`` (counted from 1) of ``epochs``."""
        raise NotImplementedError


class _CnnArd(VDVariant):
    """The original zoos' ``Conv2dARD`` / ``LinearARD`` (docs/research/original-zoos.md, 4.1)."""

    def raw_log_alpha(self, theta, log_sigma2):
        return log_sigma2 - 2 * torch.log(torch.abs(theta) + 1e-15)

    def kl_factor(self, epoch, epochs, n_train, warmup_epochs):
        """``min(1, 0.01 * e / epochs)`` for the original's epochs e = 0..epochs-1: no 1/N, no warm-up."""
        return min(1.0, 0.01 * (epoch - 1) / max(epochs, 1))


class _Elbo(VDVariant):
    """The negative ELBO per training sample, deterministic biases, one clamp."""

    def raw_log_alpha(self, theta, log_sigma2):
        return log_sigma2 - torch.log(theta * theta + 1e-8)

    def kl_factor(self, epoch, epochs, n_train, warmup_epochs):
        """``w / N_train`` with the linear warm-up ``w = min(1, epoch / warm-up)`` (1 without)."""
        warmup = 1.0 if warmup_epochs <= 0 else min(1.0, epoch / warmup_epochs)
        return warmup / n_train


CNN_ARD = _CnnArd("cnn_ard", conv_clamp=(-8.0, 8.0), linear_clamp=(-10.0, 10.0), var_eps=1e-15,
                  conv_bias_noise=True)
ELBO = _Elbo("elbo", conv_clamp=(-10.0, 10.0), linear_clamp=(-10.0, 10.0), var_eps=1e-8, conv_bias_noise=False)
VARIANTS: dict[str, VDVariant] = {v.name: v for v in (CNN_ARD, ELBO)}


def get_variant(name: str) -> VDVariant:
    """The variant called ``name`` (a spec's ``vd.variant``, one of :data:`~zoo_dataset.specs.VD_VARIANTS`)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown VD variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def kl_approx(log_alpha: torch.Tensor) -> torch.Tensor:
    """Summed KL(q || log-uniform prior) with Molchanov et al.'s approximation (eq. 14).

    ``-KL = k1 sigmoid(k2 + k3 log_alpha) - 0.5 log(1 + 1/alpha) - k1`` per weight.
    """
    neg_kl = K1 * torch.sigmoid(K2 + K3 * log_alpha) - 0.5 * F.softplus(-log_alpha) - K1
    return -neg_kl.sum()


class _SampledOutput(torch.autograd.Function):
    """``mean + sqrt(variance + eps) * noise`` with a backward of its own.

    The forward also computes ``noise / (2 sqrt(variance + eps))``, the output's derivative
    by the variance and all that the backward keeps. On CPU one compiled pass does both
    (:mod:`.sampling_cpu`: memory traffic, not arithmetic, is the cost of sampling there); tensor
    ops elsewhere. Autograd's chain of four ops allocated six layer-sized temporaries.
    """

    @staticmethod
    def forward(ctx, mean: torch.Tensor, variance: torch.Tensor, noise: torch.Tensor, eps: float) -> torch.Tensor:
        out, d_variance = torch.empty_like(mean), torch.empty_like(noise)
        if mean.device.type != "cpu" or not _sample_compiled(mean, variance, noise, out, d_variance, eps):
            std = variance.add(eps).sqrt_()
            torch.addcmul(mean, std, noise, out=out)
            torch.div(noise, std, out=d_variance).mul_(0.5)
        ctx.save_for_backward(d_variance)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        (d_variance,) = ctx.saved_tensors
        return grad, grad * d_variance, None, None


def _sample_compiled(mean: torch.Tensor, variance: torch.Tensor, noise: torch.Tensor, out: torch.Tensor,
                     d_variance: torch.Tensor, eps: float) -> bool:
    from .sampling_cpu import sample_compiled  # numba loads on first use: readers of a store never need it

    return sample_compiled(mean, variance, noise, out, d_variance, eps)


def sampled_output(mean: torch.Tensor, variance: torch.Tensor, noise: torch.Tensor, eps: float) -> torch.Tensor:
    """One Gaussian sample per output given its mean, variance and standard normal ``noise``
    (the local reparameterization trick; ``eps``: the variant's ``var_eps``); the per-model
    layers and the engine both call it."""
    return _SampledOutput.apply(mean, variance, noise, eps)


class _VariationalMixin:
    """Shared by the conv and linear VD layers: parameters, log_alpha, KL and the eval weight and bias."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    threshold: float
    variant: VDVariant
    is_conv: bool

    def _init_variational(self, threshold: float, variant: VDVariant) -> None:
        self.threshold, self.variant = threshold, variant
        self.log_sigma2 = nn.Parameter(torch.full_like(self.weight, LOG_SIGMA2_INIT))
        if self.noisy_bias:
            self.log_sigma2_bias = nn.Parameter(torch.full_like(self.bias, LOG_SIGMA2_INIT))

    @property
    def noisy_bias(self) -> bool:
        """Whether the bias is variational too (``cnn_ard`` conv layers)."""
        return self.bias is not None and self.is_conv and self.variant.conv_bias_noise

    @property
    def log_alpha(self) -> torch.Tensor:
        return self.variant.log_alpha(self.weight, self.log_sigma2, self.is_conv)

    @property
    def log_alpha_bias(self) -> torch.Tensor | None:
        return self.variant.log_alpha(self.bias, self.log_sigma2_bias, self.is_conv) if self.noisy_bias else None

    def kl(self) -> torch.Tensor:
        kl = kl_approx(self.log_alpha)
        return kl + kl_approx(self.log_alpha_bias) if self.noisy_bias else kl

    def sparse_weight(self) -> torch.Tensor:
        """Mean weights with the dropped ones (``log_alpha >= threshold``) set to zero."""
        return torch.where(self.log_alpha < self.threshold, self.weight, torch.zeros_like(self.weight))

    def sparse_bias(self) -> torch.Tensor | None:
        """The bias outside training: a variational bias is dropped like a weight, others are kept."""
        if not self.noisy_bias:
            return self.bias
        return torch.where(self.log_alpha_bias < self.threshold, self.bias, torch.zeros_like(self.bias))

    def variance_bias(self) -> torch.Tensor | None:
        """``alpha_b * b^2``, the variational bias's share of the output variance (else None)."""
        return torch.exp(self.log_alpha_bias) * self.bias * self.bias if self.noisy_bias else None

    def _sample(self, mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
        """One Gaussian sample per output: the active step's draws (the trainers), else torch's RNG."""
        draws = active_draws()
        eps = torch.randn_like(mean) if draws is None else draws.normal(tuple(mean.shape))[0]
        return sampled_output(mean, variance, eps, self.variant.var_eps)


class VDConv2d(_VariationalMixin, nn.Conv2d):
    """Conv2d with sparse VD: one convolution for the mean, one for the variance."""

    is_conv = True

    def __init__(self, *args, threshold: float = VD_THRESHOLD, variant: VDVariant = CNN_ARD, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_variational(threshold, variant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self._conv_forward(x, self.sparse_weight(), self.sparse_bias())
        mean = self._conv_forward(x, self.weight, self.bias)
        variance = self._conv_forward(x * x, torch.exp(self.log_alpha) * self.weight * self.weight,
                                      self.variance_bias())
        return self._sample(mean, variance)


class VDLinear(_VariationalMixin, nn.Linear):
    """Linear with sparse VD: the output's mean and variance, then one Gaussian sample."""

    is_conv = False

    def __init__(self, *args, threshold: float = VD_THRESHOLD, variant: VDVariant = CNN_ARD, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_variational(threshold, variant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.sparse_weight(), self.bias)
        mean = F.linear(x, self.weight, self.bias)
        variance = F.linear(x * x, torch.exp(self.log_alpha) * self.weight * self.weight)
        return self._sample(mean, variance)


VDLayer = VDConv2d | VDLinear
PLAIN_LAYERS = (nn.Conv2d, nn.Linear)


def _vd_copy(layer: nn.Module, threshold: float, variant: VDVariant) -> VDLayer:
    if isinstance(layer, nn.Conv2d):
        vd: VDLayer = VDConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                               padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                               bias=layer.bias is not None, threshold=threshold, variant=variant)
    else:
        vd = VDLinear(layer.in_features, layer.out_features, bias=layer.bias is not None, threshold=threshold,
                      variant=variant)
    with torch.no_grad():
        vd.weight.copy_(layer.weight)
        if layer.bias is not None:
            vd.bias.copy_(layer.bias)
    return vd


class VariationalNet(nn.Sequential):
    """A zoo CNN whose conv/linear children are VD layers; other children (dropout...) are kept.

    It carries its variant and training length, so a recipe needs nothing else for the objective:
    ``cross_entropy + variant.kl_factor(...) * KL``.
    """

    def __init__(self, children: OrderedDict[str, nn.Module], variant: VDVariant, epochs: int,
                 kl_warmup_epochs: int = 0):
        super().__init__(children)
        self.variant, self.epochs, self.kl_warmup_epochs = variant, epochs, kl_warmup_epochs

    def vd_layers(self) -> list[tuple[str, VDLayer]]:
        return [(n, m) for n, m in self.named_children() if isinstance(m, VDConv2d | VDLinear)]

    def kl(self) -> torch.Tensor:
        return sum(layer.kl() for _, layer in self.vd_layers())

    def kl_factor(self, epoch: int, n_train: int) -> float:
        """What the summed KL is multiplied by in the loss of epoch ``epoch`` (counted from 1)."""
        return self.variant.kl_factor(epoch, self.epochs, n_train, self.kl_warmup_epochs)

    def objective(self, logits: torch.Tensor, y: torch.Tensor, n_train: int, epoch: int) -> torch.Tensor:
        """The training loss: mean cross-entropy + ``kl_factor`` x summed KL."""
        return F.cross_entropy(logits, y) + self.kl_factor(epoch, n_train) * self.kl()


def to_variational(model: nn.Module, variant: VDVariant | str = CNN_ARD, epochs: int = 25,
                   threshold: float = VD_THRESHOLD, kl_warmup_epochs: int = 0) -> VariationalNet:
    """A VD copy of a plain ``nn.Sequential`` CNN: same weights and biases, ``log_sigma2`` at -10.

    ``epochs`` is the VD training length (the cnn_ard KL ramp spans it; the original's 25)."""
    variant = get_variant(variant) if isinstance(variant, str) else variant
    children = OrderedDict(
        (name, _vd_copy(child, threshold, variant) if isinstance(child, PLAIN_LAYERS) else copy.deepcopy(child))
        for name, child in model.named_children()
    )
    vd = VariationalNet(children, variant, epochs, kl_warmup_epochs)
    return vd.train(model.training)


def to_plain(model: VariationalNet) -> nn.Sequential:
    """The pruned deterministic CNN that VD's eval mode computes: dropped weights (and variational
    biases) are exact zeros."""
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
                plain.bias.copy_(child.sparse_bias())
        children[name] = plain
    return nn.Sequential(children).train(model.training)


def conv_layers(layout: ParameterLayout) -> set[str]:
    """The layout's convolutional layers (4-D weights)."""
    return {e.layer for e in layout.weight_entries() if len(e.shape) == 4}


def variational_entries(layout: ParameterLayout, variant: VDVariant) -> np.ndarray:
    """Boolean [P]: the parameters ``variant`` noises and prunes (weights; cnn_ard: conv biases too)."""
    convs = conv_layers(layout)
    prunable = np.zeros(layout.num_params, dtype=bool)
    for e in layout.entries:
        prunable[e.slice] = e.kind == "weight" or (variant.conv_bias_noise and e.layer in convs)
    return prunable


def flat_log_alpha(layout: ParameterLayout, params: Mapping[str, torch.Tensor],
                   log_sigma2: Mapping[str, torch.Tensor], variant: VDVariant) -> np.ndarray:
    """log_alpha [P] in the plain layout, float32: ``params`` by state-dict name (``conv1.weight``),
    ``log_sigma2`` by the same names (a weight's or a variational bias's). Positions the variant
    does not noise hold ``BIAS_LOG_ALPHA``. Built twins and converted published twins both use it."""
    convs, prunable = conv_layers(layout), variational_entries(layout, variant)
    parts = []
    with torch.no_grad():
        for e in layout.entries:
            if not prunable[e.offset]:
                parts.append(np.full(e.size, BIAS_LOG_ALPHA, dtype=np.float32))
                continue
            alpha = variant.log_alpha(params[e.name].detach().float(), log_sigma2[e.name].detach().float(),
                                      e.layer in convs)
            parts.append(alpha.reshape(-1).cpu().numpy().astype(np.float32))
    return np.concatenate(parts)


def keep_mask(log_alpha: np.ndarray, prunable: np.ndarray, threshold: float) -> np.ndarray:
    """Keep-mask from log_alpha ([..., P]): ``log_alpha < threshold`` where the variant prunes,
    True elsewhere; computed from the float32 vector itself, so the stored pair agrees exactly."""
    return np.where(prunable, log_alpha < np.float32(threshold), True)


@torch.no_grad()
def flat_state(model: VariationalNet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(theta, keep-mask, log_alpha) as flat vectors in the plain parameter layout."""
    layout = ParameterLayout.from_module(model)
    layers = dict(model.vd_layers())
    params = dict(model.named_parameters())
    sigma = {f"{name}.weight": layer.log_sigma2 for name, layer in layers.items()}
    sigma |= {f"{name}.bias": layer.log_sigma2_bias for name, layer in layers.items() if layer.noisy_bias}
    log_alpha = flat_log_alpha(layout, params, sigma, model.variant)
    mask = keep_mask(log_alpha, variational_entries(layout, model.variant), next(iter(layers.values())).threshold)
    theta = layout.flatten_module(model).numpy().astype(np.float32)
    return theta, mask, log_alpha
