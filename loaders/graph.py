"""The ``graph`` view: a state as a neural graph (Kofinas et al. 2024, "Graph Neural Networks for
Learning Equivariant Representations of Neural Networks"), whose nodes are neurons and whose
edges are weights, so that a GNN sees the network's neuron symmetry as graph relabelling.

Conventions, as in the paper's public code (``cnn_to_graph``, ``pad_and_flatten_kernel``) unless
said otherwise:

* nodes: the input neurons (input channels) first, then each layer's neurons in order; a node's
  feature ``x`` is its bias (input nodes: 0);
* edges go from an input neuron to the neuron it feeds, ordered by source then target (the order
  of ``adjacency.nonzero()``); ``edge_attr`` is the weight, a conv kernel as a feature vector:
  every block is centred in the largest block ``H x W`` of the network (or the ``kernel`` given;
  floor of the padding before, as ``pad_and_flatten_kernel``) and flattened row-major; a dense weight is a 1 x 1 block
  (their ``linear_as_conv`` option);
* the flatten into the first dense layer: the paper's code repeats the last conv layer's nodes
  per feature-map position or inserts a spatial selection layer; here the dense layer's weights
  per (neuron, input channel) are one edge whose feature vector is the feature map, a kernel
  covering the map (as the ``nfn`` view shapes it). One node per neuron, the network's own
  symmetry, and an exact inverse.

Besides ``x``, ``edge_index`` and ``edge_attr``: ``edge_valid`` (bool ``[E, H*W]``: the real
entries of each feature vector), ``node_layer`` (0 for input nodes, ``l + 1`` for the neurons of
layer ``l``), ``node_neuron`` (a node's neuron within its layer), ``edge_layer`` (the layer of the
neuron an edge feeds, ``l + 1``), ``is_input`` and ``is_output``. A state of leading shape
``[..., P]`` (a trajectory's epochs) gives ``x`` ``[N, ..., 1]`` and ``edge_attr`` ``[E, ..., H*W]``:
the node and edge axes stay first, as torch_geometric batches them. With torch-geometric installed
(the ``graph`` extra) a state is a ``torch_geometric.data.Data``, else a dict of the same tensors.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import torch

from zoo_dataset.errors import ZooSpecError
from zoo_dataset.layout import ParameterLayout

from .shapes import layer_shapes


@functools.cache
def data_class() -> type | None:
    """``torch_geometric.data.Data`` when torch-geometric is installed (imported on first use only)."""
    if importlib.util.find_spec("torch_geometric") is None:
        return None
    from torch_geometric.data import Data

    return Data


class GraphView:
    name = "graph"

    def __init__(self, layout: ParameterLayout, kernel: tuple[int, int] | None = None):
        """``kernel``: the ``(H, W)`` grid of the edge features (default the network's largest
        block); give graphs of different architectures one grid so their positions line up."""
        self.layout = layout
        layers = layer_shapes(layout)
        height = max(_block(s.block)[0] for s in layers)
        width = max(_block(s.block)[1] for s in layers)
        if kernel is not None:
            if len(kernel) != 2 or kernel[0] < height or kernel[1] < width:
                raise ZooSpecError(f"kernel {tuple(kernel)} does not hold this network's largest block "
                                   f"({height}, {width})")
            height, width = int(kernel[0]), int(kernel[1])
        self.kernel = (height, width)
        self.feature_size = height * width
        sizes = [layers[0].inputs] + [s.outputs for s in layers]
        starts = torch.tensor([0, *sizes]).cumsum(0).tolist()
        self.num_nodes = starts[-1]
        pad = layout.num_params
        sources, targets, slots, edge_layer = [], [], [], []
        bias_of = torch.full((self.num_nodes,), pad, dtype=torch.long)
        for number, shape in enumerate(layers):
            h, w = _block(shape.block)
            top, left = (height - h) // 2, (width - w) // 2
            # the slot of each block entry in the H x W grid, row-major
            slot = ((top + torch.arange(h))[:, None] * width + left + torch.arange(w)).ravel()
            entries = torch.arange(shape.weight.size).view(shape.outputs, shape.inputs, h * w) + shape.weight.offset
            grid = torch.full((shape.inputs, shape.outputs, self.feature_size), pad, dtype=torch.long)
            grid[:, :, slot] = entries.transpose(0, 1)  # source-major, as the edges
            slots.append(grid.view(-1, self.feature_size))
            source = torch.arange(shape.inputs).repeat_interleave(shape.outputs) + starts[number]
            sources.append(source)
            targets.append(torch.arange(shape.outputs).repeat(shape.inputs) + starts[number + 1])
            edge_layer.append(torch.full((len(source),), number + 1))
            bias_of[starts[number + 1]:starts[number + 2]] = torch.arange(shape.bias.size) + shape.bias.offset
        self.edge_index = torch.stack([torch.cat(sources), torch.cat(targets)])
        self._edge_params = torch.cat(slots)  # [E, H*W]: the flat index of each feature entry (pad: none)
        self.edge_valid = self._edge_params != pad
        self._bias_params = bias_of
        self.node_layer = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        self.node_neuron = torch.cat([torch.arange(n) for n in sizes])
        self.edge_layer = torch.cat(edge_layer)
        self.is_input = self.node_layer == 0
        self.is_output = self.node_layer == len(layers)
        # the inverse is one gather from [node features (N), edge features (E * H * W)]: the place of
        # each parameter there (index_select, not advanced indexing: far faster on small tensors)
        places = torch.cat([bias_of, self._edge_params.ravel()])
        real = torch.nonzero(places != pad).ravel()
        self._source = torch.empty(pad, dtype=torch.long)
        self._source[places[real]] = real
        self._data = data_class()

    def __call__(self, flat: torch.Tensor) -> Any:
        lead = flat.shape[:-1]
        padded = torch.cat([flat, flat.new_zeros(*lead, 1)], dim=-1)
        x = padded.index_select(-1, self._bias_params).movedim(-1, 0).unsqueeze(-1)  # [N, ..., 1]
        edges = padded.index_select(-1, self._edge_params.ravel()).view(*lead, *self._edge_params.shape)
        fields = {
            "x": x,
            "edge_index": self.edge_index,
            "edge_attr": edges.movedim(-2, 0),  # [E, ..., H*W]
            "edge_valid": self.edge_valid,
            "node_layer": self.node_layer,
            "node_neuron": self.node_neuron,
            "edge_layer": self.edge_layer,
            "is_input": self.is_input,
            "is_output": self.is_output,
        }
        return fields if self._data is None else self._data(**fields)

    def inverse(self, viewed: Any) -> torch.Tensor:
        x, edges = viewed["x"], viewed["edge_attr"]
        biases = x.squeeze(-1).movedim(0, -1)  # [..., N]
        weights = edges.movedim(0, -2)  # [..., E, H*W]
        return torch.cat([biases, weights.reshape(*biases.shape[:-1], -1)], dim=-1).index_select(-1, self._source)


def _block(block: tuple[int, ...]) -> tuple[int, int]:
    """A weight block as (h, w): a dense weight is 1 x 1."""
    return (block[0], block[1]) if len(block) == 2 else (1, 1)
