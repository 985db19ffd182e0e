"""Many CNNs of one architecture as one computation: stacked parameters and batched layers.

On CPU with batch size 10 a tiny CNN is all per-op overhead; stacking ``M`` models turns every
layer into one op over all of them. Convolutions run as grouped convolutions over a
``[batch, M * channels, H, W]`` layout (model ``m`` owns channel block ``m``; channels-last memory,
which made a CPU training epoch ~1.6x faster than NCHW, mostly in pooling), linear layers as
batched matmuls over ``[M, batch, features]``. Pooling and activations act per channel, so they
need no change. Randomness inside the forward pass (dropout masks, VD noise) comes from the
step's counter-based draws (:class:`~zoo_dataset.counter_rng.StepDraws`), one batched op for all
models, in the order the per-model reference draws it, so both paths see the same numbers. What a
method changes (VD's layers, MP's masks) comes in through its hooks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..counter_rng import StepDraws
from ..layout import ParameterLayout
from ..population_hooks import LayerOp, PopulationHooks


class PopulationNet:
    """``M`` models with the architecture of ``template``, parameters stacked along a model axis.

    ``hooks`` are the method's batched form (:class:`~zoo_dataset.methods.PopulationHooks`): extra
    stacked parameters trained with the weights, the weight used outside training and a layer's
    training output (VD's local reparameterisation).
    """

    def __init__(self, template: nn.Module, states: torch.Tensor, device: torch.device,
                 hooks: PopulationHooks | None = None):
        self.layout = ParameterLayout.from_module(template)
        self.children = list(template.named_children())
        self.device = device
        self.size = int(states.shape[0])
        self.hooks = hooks or PopulationHooks()
        # Storage is one [M, P] tensor (and [M, weights] per extra parameter) that the optimizer
        # updates in a few ops; autograd sees one leaf per layer tensor, a view of that storage.
        # Slicing a single flat leaf instead made backward scatter every layer's gradient into a
        # zeroed [M, P] (~8 % of a CPU step).
        self.flat_params = states.to(device).clone()
        self.flat_extras = {name: t.to(device).clone() for name, t in self.hooks.extra_parameters().items()}
        self.leaves = {e.name: _leaf(self.flat_params[:, e.slice], e.shape) for e in self.layout.entries}
        self.extra_leaves: dict[str, dict[str, torch.Tensor]] = {}
        for name, storage in self.flat_extras.items():
            offset, leaves = 0, {}
            for e in self.hooks.extra_entries(name, self.layout):
                leaves[e.layer] = _leaf(storage[:, offset : offset + e.size], e.shape)
                offset += e.size
            self.extra_leaves[name] = leaves

    def parameters(self) -> list[torch.Tensor]:
        """The storage tensors the optimizer updates, in the order :meth:`gradients` returns."""
        return [self.flat_params, *self.flat_extras.values()]

    def gradients(self, loss: torch.Tensor) -> list[torch.Tensor]:
        """Gradients of ``loss`` laid out like :meth:`parameters`."""
        groups = [list(self.leaves.values())] + [list(leaves.values()) for leaves in self.extra_leaves.values()]
        grads = iter(torch.autograd.grad(loss, [leaf for group in groups for leaf in group]))
        return [torch.cat([next(grads).reshape(self.size, -1) for _ in group], dim=1) for group in groups]

    def param(self, name: str) -> torch.Tensor:
        """One named parameter of all models, [M, *shape], a view of the flat storage."""
        return self.leaves[name]

    def extra(self, name: str, layer: str) -> torch.Tensor:
        """One layer's slice of an extra parameter (e.g. VD's ``log_sigma2``), [M, *shape of its entry]."""
        return self.extra_leaves[name][layer]

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, draws: StepDraws | None) -> torch.Tensor:
        """Logits [M, batch, classes]; in training (``draws`` given) or evaluation (``None``).

        ``x`` is either per-model input ``[batch, M * C, H, W]`` or one input shared by all models
        ``[batch, C, H, W]`` (evaluation); the first convolution tells them apart by channel count.
        """
        h = x.contiguous(memory_format=torch.channels_last)
        for name, module in self.children:
            if isinstance(module, nn.Conv2d):
                h = self._conv(name, module, h, draws)
            elif isinstance(module, nn.Linear):
                h = self._linear(name, h, draws)
            elif isinstance(module, nn.Flatten):
                h = h.reshape(h.shape[0], self.size, -1).transpose(0, 1)
            elif isinstance(module, nn.Dropout):
                h = self._dropout(module.p, h, draws)
            else:  # pooling and activations act per channel / element
                h = module(h)
        return h

    def _weight(self, layer: str, draws: StepDraws | None) -> torch.Tensor:
        """The weight the layer computes with: the method's choice outside training."""
        w = self.param(f"{layer}.weight")
        return self.hooks.eval_weight(self, layer, w) if draws is None else w

    def _bias(self, layer: str, draws: StepDraws | None) -> torch.Tensor:
        """The bias the layer computes with: the method's choice outside training."""
        b = self.param(f"{layer}.bias")
        return self.hooks.eval_bias(self, layer, b) if draws is None else b

    def _conv(self, layer: str, module: nn.Conv2d, h: torch.Tensor, draws: StepDraws | None) -> torch.Tensor:
        w, b = self._weight(layer, draws), self._bias(layer, draws)
        groups = h.shape[1] // module.in_channels  # 1 for a shared input, M otherwise
        if groups == 1 and draws is None:
            return _shared_input_conv(module, h, w, b)

        def conv(inp: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            flat_bias = None if bias is None else bias.reshape(-1)
            return F.conv2d(inp, weight.reshape(-1, *weight.shape[2:]), flat_bias,
                            stride=module.stride, padding=module.padding, groups=groups)

        mean = conv(h, w, b).contiguous(memory_format=torch.channels_last)
        if draws is None:
            return mean
        op = LayerOp(conv, (mean.shape[0], module.out_channels, *mean.shape[2:]), self._model_major)
        return self.hooks.noisy_output(self, layer, op, h, w, mean, draws)

    def _linear(self, layer: str, h: torch.Tensor, draws: StepDraws | None) -> torch.Tensor:
        w, b = self._weight(layer, draws), self._bias(layer, draws)
        mean = _batched_linear(h, w, b)
        if draws is None:
            return mean
        op = LayerOp(_batched_linear, tuple(mean.shape[1:]), lambda t: t)  # already [M, batch, out]
        return self.hooks.noisy_output(self, layer, op, h, w, mean, draws)

    def _dropout(self, p: float, h: torch.Tensor, draws: StepDraws | None) -> torch.Tensor:
        """As :class:`~zoo_dataset.counter_rng.CounterDropout` computes it for one model."""
        if draws is None or p == 0:
            return h
        keep = 1 - p
        if h.dim() == 4:  # [batch, M * C, H, W]
            masks = torch.empty_like(h, dtype=torch.bool)  # h's memory format
            view = self._model_major(masks)
            view.copy_(draws.keep_mask(tuple(view.shape[1:]), keep))
        else:  # [M, batch, features]
            masks = draws.keep_mask(tuple(h.shape[1:]), keep)
        return h * (masks.to(h.dtype) / keep)

    def _model_major(self, h: torch.Tensor) -> torch.Tensor:
        """The grouped layout [batch, M * C, H, W] viewed as [M, batch, C, H, W] (no copy)."""
        return h.unflatten(1, (self.size, -1)).transpose(0, 1)

    @torch.no_grad()
    def flat(self) -> torch.Tensor:
        """Stacked parameters as flat vectors [M, P] in the plain layout."""
        return self.flat_params.cpu().clone()


def _batched_linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``h @ w.T (+ b)`` per model: [M, batch, in] x [M, out, in] -> [M, batch, out]."""
    if b is None:
        return torch.bmm(h, w.transpose(1, 2))
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))


def _leaf(storage_slice: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A gradient-tracking view of ``[M, n]`` storage shaped ``[M, *shape]``."""
    return storage_slice.view(storage_slice.shape[0], *shape).requires_grad_()


def _shared_input_conv(module: nn.Conv2d, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All models' filters over one shared input as im2col + one matmul.

    The matmul writes ``[batch, H, W, M * C_out]``, which is the channels-last layout the next
    layers want; oneDNN's ungrouped convolution wrote NCHW here and the conversion copy plus the
    convolution cost ~1.5x as much (evaluation's largest op).
    """
    n, _, hgt, wid = h.shape
    out_h, out_w = (
        (size + 2 * pad - k) // stride + 1
        for size, pad, k, stride in zip((hgt, wid), module.padding, module.kernel_size, module.stride, strict=True)
    )
    cols = F.unfold(h, module.kernel_size, padding=module.padding, stride=module.stride)  # [batch, C*k*k, L]
    flat_w = w.reshape(-1, cols.shape[1])  # [M * C_out, C*k*k]
    out = torch.addmm(b.reshape(-1), cols.transpose(1, 2).reshape(-1, cols.shape[1]), flat_w.t())
    return out.view(n, out_h, out_w, -1).permute(0, 3, 1, 2)


def per_model_input(x: torch.Tensor) -> torch.Tensor:
    """[M, batch, C, H, W] (one batch per model) to the grouped layout [batch, M * C, H, W]."""
    m, b, c, hgt, wid = x.shape
    return x.transpose(0, 1).reshape(b, m * c, hgt, wid)
