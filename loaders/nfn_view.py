"""The ``nfn`` view: a state as the weight-space features of neural functionals (the ``nfn`` package,
Zhou et al. 2023; DWSNets and ScaleGMN read the same shapes).

A state is ``(weights, biases)``, two tuples with one tensor per layer and one channel:
``weights[l]`` is ``[1, n_out, n_in, *block]`` and ``biases[l]`` is ``[1, n_out]``. A conv's block
is its kernel; the dense layer after the flatten holds one weight per (neuron, input channel,
feature-map position), so its block is the feature map (``fc1`` of CNN-s: ``[1, 20, 4, 3, 3]``,
a kernel covering the whole map) and its ``n_in`` is the conv channels before it: the spec the
``nfn`` package builds from a batch (``network_spec_from_wsfeat``) then has each layer's ``n_in``
equal to the previous layer's ``n_out``, and the neuron symmetry NFN layers assume is the
network's own (the one :class:`loaders.transforms.NeuronPermuter` applies). A dense layer that
reads neurons one to one (after a dense layer, or after global average pooling) stays
``[1, n_out, n_in]``.

``WeightSpaceFeatures(*default_collate(items)["original"])`` (``nfn.common``) is then a batch
``[B, 1, n_out, n_in, *block]`` as the ``nfn`` examples use it; masks and log-alphas come in the
same shapes. Leading shapes (``[..., P]``, e.g. a trajectory's epochs) stay in front of the channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zoo_dataset.layout import ParameterLayout

from .shapes import layer_shapes

WeightSpace = tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]


class NfnView:
    name = "nfn"

    def __init__(self, layout: ParameterLayout):
        self.layout = layout
        self.layers = layer_shapes(layout)

    def __call__(self, flat: torch.Tensor) -> WeightSpace:
        lead = flat.shape[:-1]
        weights = tuple(
            flat[..., s.weight.slice].reshape(*lead, 1, s.outputs, s.inputs, *s.block) for s in self.layers
        )
        biases = tuple(flat[..., s.bias.slice].reshape(*lead, 1, s.outputs) for s in self.layers)
        return weights, biases

    def inverse(self, viewed: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        weights, biases = viewed
        parts = []
        for shape, w, b in zip(self.layers, weights, biases, strict=True):
            lead = b.shape[:-2]
            parts += [w.reshape(*lead, shape.weight.size), b.reshape(*lead, shape.bias.size)]
        return torch.cat(parts, dim=-1)
