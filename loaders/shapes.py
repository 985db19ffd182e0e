"""The layer structure a parameter layout implies: neurons, the neurons each layer reads, and the
weight block of each (output, input) pair, for the views that need it (nfn, graph, sane).

A layer's weight is ``[outputs, inputs, *block]``: a conv's ``block`` is its kernel; a dense
layer that reads a flattened conv output holds, per (output neuron, input channel), one weight
per position of the feature map (nn.Flatten is channel-major), so its ``block`` is that map, a
kernel covering the whole feature map; a dense layer that reads neurons one to one (a dense
layer after a dense layer, or after global average pooling) has the empty block ``()``.
Everything is derived from the layout, so any architecture of conv and dense layers works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from zoo_dataset.errors import ZooSpecError
from zoo_dataset.layout import LayoutEntry, ParameterLayout


@dataclass(frozen=True)
class LayerShape:
    name: str
    weight: LayoutEntry
    bias: LayoutEntry
    outputs: int  # neurons of this layer (conv channels, dense units)
    inputs: int  # neurons (or input channels) it reads
    block: tuple[int, ...]  # weights per (output, input) pair: kernel, feature map, or () for one weight

    @property
    def block_size(self) -> int:
        return math.prod(self.block)


def layer_shapes(layout: ParameterLayout) -> list[LayerShape]:
    """The layers of ``layout`` in forward order with the neurons they read and their weight blocks."""
    shapes: list[LayerShape] = []
    for name in layout.layers:
        weight, bias = layout.by_name[f"{name}.weight"], layout.by_name[f"{name}.bias"]
        outputs, previous = weight.shape[0], shapes[-1].outputs if shapes else None
        if len(weight.shape) == 4:  # conv: [out, in, kh, kw]
            inputs, block = weight.shape[1], tuple(weight.shape[2:])
            if previous is not None and inputs != previous:
                raise ZooSpecError(f"layer {name} reads {inputs} channels; the layer before it has {previous}")
        elif len(weight.shape) == 2:  # dense: [out, fan_in]
            fan_in = weight.shape[1]
            if previous is None or fan_in == previous:
                inputs, block = fan_in, ()
            elif fan_in % previous:
                raise ZooSpecError(f"layer {name} has {fan_in} inputs per neuron, not a multiple of the {previous} "
                                   "neurons before it: its weights do not split into blocks per input neuron")
            else:
                inputs, block = previous, feature_map(fan_in // previous)
        else:
            raise ZooSpecError(f"layer {name} has a {len(weight.shape)}-d weight: the views know conv and dense layers")
        if bias.shape != (outputs,):
            raise ZooSpecError(f"layer {name} has bias shape {bias.shape}, not ({outputs},)")
        shapes.append(LayerShape(name, weight, bias, outputs, inputs, block))
    return shapes


def feature_map(area: int) -> tuple[int, int]:
    """The ``(h, w)`` of a flattened feature map of ``area`` positions: square where ``area`` is a
    square (every architecture here: square inputs, kernels and pools), else one column. Either
    reshape is exact (nn.Flatten is channel-major), only the names of the axes differ."""
    side = math.isqrt(area)
    return (side, side) if side * side == area else (area, 1)
