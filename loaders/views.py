"""Weight views: the same flat parameter vector shaped for different weight-space models.

* ``flat``: one vector [P].
* ``layers``: per-layer weight and bias tensors in module shapes, as NFN-style
  permutation-equivariant models expect.
* ``tokens``: one token per output neuron (its incoming weights flattened, zero-padded to a
  common width, bias in the last column) with layer and position ids, as transformer
  hyper-representations expect.
* ``nfn``: ``(weights, biases)`` with one channel, the flatten as a kernel over the feature map,
  as the ``nfn`` package's neural functionals expect (``loaders.nfn_view``).
* ``graph``: a neural graph, neurons as nodes and weights as edges (``loaders.graph``).
* ``sane``: fixed-size tokens with (layer, neuron, chunk) positions, as SANE cuts them; windows
  with ``RandomTokenWindow`` (``loaders.sane``).

Every view works on any leading batch shape ([..., P]) and inverts exactly back to the flat
vector, so a viewed state can always be loaded into a working model again.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from zoo_dataset.errors import ZooSpecError
from zoo_dataset.layout import ParameterLayout

from .graph import GraphView
from .nfn_view import NfnView
from .sane import SaneTokensView


class View(Protocol):
    name: str

    def __call__(self, flat: torch.Tensor) -> Any: ...

    def inverse(self, viewed: Any) -> torch.Tensor: ...


class FlatView:
    name = "flat"

    def __init__(self, layout: ParameterLayout):
        self.layout = layout

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        return flat

    def inverse(self, viewed: torch.Tensor) -> torch.Tensor:
        return viewed


class LayersView:
    """``{"weights": [w per layer], "biases": [b per layer]}`` in module shapes."""

    name = "layers"

    def __init__(self, layout: ParameterLayout):
        self.layout = layout

    def __call__(self, flat: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        named = self.layout.unflatten(flat)
        layers = self.layout.layers
        return {
            "weights": [named[f"{layer}.weight"] for layer in layers],
            "biases": [named[f"{layer}.bias"] for layer in layers],
        }

    def inverse(self, viewed: dict[str, list[torch.Tensor]]) -> torch.Tensor:
        tensors = {}
        for layer, w, b in zip(self.layout.layers, viewed["weights"], viewed["biases"], strict=True):
            tensors[f"{layer}.weight"], tensors[f"{layer}.bias"] = w, b
        parts = []
        for entry in self.layout.entries:  # layout order, whatever leading batch shape
            t = tensors[entry.name]
            parts.append(t.reshape(*t.shape[: t.dim() - len(entry.shape)], -1))
        return torch.cat(parts, dim=-1)


class TokensView:
    """``{"tokens": [N, D], "layer_id": [N], "position_id": [N], "valid": [N, D]}``, N = output neurons."""

    name = "tokens"

    def __init__(self, layout: ParameterLayout):
        self.layout = layout
        rows = []  # per neuron: flat indices of its incoming weights, and of its bias
        layer_ids, positions = [], []
        for layer_index, layer in enumerate(layout.layers):
            w, b = layout.by_name[f"{layer}.weight"], layout.by_name[f"{layer}.bias"]
            fan_in = w.size // w.shape[0]
            for neuron in range(w.shape[0]):
                start = w.offset + neuron * fan_in
                rows.append((list(range(start, start + fan_in)), b.offset + neuron))
                layer_ids.append(layer_index)
                positions.append(neuron)
        self.width = max(len(r[0]) for r in rows) + 1
        pad = layout.num_params  # index of an appended zero
        index = torch.full((len(rows), self.width), pad, dtype=torch.long)
        for i, (weights, bias) in enumerate(rows):
            index[i, : len(weights)] = torch.tensor(weights)
            index[i, -1] = bias
        self.index = index
        self.valid = index != pad
        self._valid_index = index[self.valid]  # flat position of each valid slot, in slot order
        # the grid slot of each flat position: the inverse is one gather. Gathers by index_select
        # (not advanced indexing, which runs ~50x slower on such small grids with 2 torch threads)
        self._slot = torch.empty(pad, dtype=torch.long)
        self._slot[self._valid_index] = torch.nonzero(self.valid.ravel()).ravel()
        self.layer_id = torch.tensor(layer_ids)
        self.position_id = torch.tensor(positions)

    def __call__(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        padded = torch.cat([flat, flat.new_zeros(*flat.shape[:-1], 1)], dim=-1)
        lead = flat.shape[:-1]
        tokens = padded.index_select(-1, self.index.ravel()).view(*lead, *self.index.shape)
        return {
            "tokens": tokens,
            "layer_id": self.layer_id.expand(*lead, -1),
            "position_id": self.position_id.expand(*lead, -1),
            "valid": self.valid.expand(*lead, -1, -1),
        }

    def inverse(self, viewed: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = viewed["tokens"]
        return tokens.reshape(*tokens.shape[:-2], -1).index_select(-1, self._slot)


VIEWS: dict[str, type] = {"flat": FlatView, "layers": LayersView, "tokens": TokensView}
VIEWS |= {"nfn": NfnView, "graph": GraphView, "sane": SaneTokensView}


def make_view(view: str | View, layout: ParameterLayout, **options: Any) -> View:
    """The view ``view`` names (``options`` go to its class, e.g. ``token_size=`` of ``sane``), or
    ``view`` itself when it is a view already made for ``layout``."""
    if not isinstance(view, str):
        if options:
            raise TypeError("view options go with a view name: make_view(name, layout, **options)")
        if getattr(view, "layout", None) != layout:
            raise ZooSpecError(f"the {getattr(view, 'name', type(view).__name__)} view was made for another "
                               "layout (make_view(name, layout, **options) makes one for this store)")
        return view
    if view not in VIEWS:
        raise ZooSpecError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    return VIEWS[view](layout, **options)
