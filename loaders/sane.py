"""The ``sane`` view and token windows: a state as the token sequence SANE trains on (Schürholt et
al. 2024, "Towards Scalable and Versatile Weight Space Learning").

SANE's tokeniser (``tokenize_checkpoint`` in its public code) takes each layer's weight as rows of
``[out, fan_in]``, appends the bias as the last column, zero-pads each row to a multiple of the
token size and cuts it into tokens of that size: a neuron's incoming weights and bias span one or
more consecutive tokens, neurons in order, layers in order. Token size 0 there means the largest
row (one token per neuron); here that is ``token_size=None``. SANE trains on random windows of
``K`` consecutive tokens (its ``WindowCutter``: the start uniform over every full window).

A state is ``{"tokens": [N, T], "valid": [N, T], "position": [N, 3], "index": [N]}``: ``valid``
marks real entries (SANE's mask), ``position`` is (layer, neuron, chunk) and ``index`` the token's
place in the model's full sequence (SANE's positions are (index, layer, neuron)). A window keeps
all four, so its tokens go back to their parameters exactly: ``inverse`` places every token by its
``index``, whether it gets the full sequence, a window (into a flat state given as ``into``) or
windows concatenated along the token axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from zoo_dataset.errors import ZooSpecError
from zoo_dataset.layout import ParameterLayout

from .shapes import layer_shapes

TokenState = dict[str, torch.Tensor]


class SaneTokensView:
    """Chunked neuron tokens of ``token_size`` entries (``None``: the largest fan-in + 1)."""

    name = "sane"

    def __init__(self, layout: ParameterLayout, token_size: int | None = None):
        self.layout = layout
        rows = []  # per neuron: (layer, neuron, flat indices of its incoming weights then its bias)
        for number, shape in enumerate(layer_shapes(layout)):
            fan_in = shape.weight.size // shape.outputs
            for neuron in range(shape.outputs):
                start = shape.weight.offset + neuron * fan_in
                rows.append((number, neuron, [*range(start, start + fan_in), shape.bias.offset + neuron]))
        widest = max(len(r[2]) for r in rows)
        if token_size is None:
            token_size = widest
        if isinstance(token_size, bool) or not isinstance(token_size, int) or token_size < 1:
            raise ZooSpecError(f"token_size must be a positive int (or None: {widest}), not {token_size!r}")
        self.token_size = token_size
        pad = layout.num_params  # the index of an appended zero
        grid, positions = [], []
        for layer, neuron, entries in rows:
            chunks = -(-len(entries) // token_size)
            padded = entries + [pad] * (chunks * token_size - len(entries))
            grid += [padded[c * token_size:(c + 1) * token_size] for c in range(chunks)]
            positions += [(layer, neuron, c) for c in range(chunks)]
        self.grid = torch.tensor(grid)  # [N, T]: the flat index of each token entry (pad: padding)
        self.valid = self.grid != pad
        self.position = torch.tensor(positions)
        self.num_tokens = len(grid)
        self._order = torch.arange(self.num_tokens)

    def __call__(self, flat: torch.Tensor) -> TokenState:
        lead = flat.shape[:-1]
        padded = torch.cat([flat, flat.new_zeros(*lead, 1)], dim=-1)
        tokens = padded.index_select(-1, self.grid.ravel()).view(*lead, *self.grid.shape)
        return {
            "tokens": tokens,
            "valid": self.valid.expand(*lead, -1, -1),
            "position": self.position.expand(*lead, -1, -1),
            "index": self._order.expand(*lead, -1),
        }

    def inverse(self, viewed: TokenState, into: torch.Tensor | None = None) -> torch.Tensor:
        """The flat state ``[..., P]`` of ``viewed``'s tokens, each written by its ``index``.

        Without ``into`` the tokens must cover the whole sequence (in any order); a window's
        tokens are written into ``into`` (a flat state whose other entries are kept)."""
        tokens, index = viewed["tokens"], viewed["index"]
        lead = tokens.shape[:-2]
        if into is None:
            covered = index.sort(dim=-1).values
            if covered.shape[-1] != self.num_tokens or not torch.equal(covered, self._order.expand_as(covered)):
                raise ZooSpecError(
                    f"these tokens cover {index.shape[-1]} of the {self.num_tokens} tokens of the sequence: "
                    "pass into= (a flat state) to write a window into it"
                )
            base = tokens.new_zeros(*lead, self.layout.num_params + 1)
        else:
            base = torch.cat([into.to(tokens.dtype).expand(*lead, -1), tokens.new_zeros(*lead, 1)], dim=-1)
        targets = self.grid[index].reshape(*lead, -1)  # padding entries all land on the appended slot
        return base.scatter(-1, targets, tokens.reshape(*lead, -1))[..., :-1]


class RandomTokenWindow:
    """An item transform: one random window of ``size`` consecutive tokens, the same for every
    state of the item (``sane`` view), as SANE's window cutter. Put it last: the transforms before
    it need whole states."""

    def __init__(self, size: int, keys: Sequence[str] = ("original", "twin", "mask", "log_alpha"),
                 generator: torch.Generator | None = None):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ZooSpecError(f"window size must be a positive int, not {size!r}")
        self.size, self.keys, self.generator = size, tuple(keys), generator

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        present = [k for k in self.keys if k in item]
        if not present:
            return item
        length = item[present[0]]["index"].shape[-1]
        if length < self.size:
            raise ZooSpecError(f"a window of {self.size} tokens does not fit a sequence of {length}")
        start = int(torch.randint(0, length - self.size + 1, (), generator=self.generator))
        return {**item, **{k: self.cut(item[k], start) for k in present}}

    def cut(self, state: TokenState, start: int) -> TokenState:
        """The window of ``size`` tokens from ``start`` of one state."""
        window = slice(start, start + self.size)
        return {
            "tokens": state["tokens"][..., window, :],
            "valid": state["valid"][..., window, :],
            "position": state["position"][..., window, :],
            "index": state["index"][..., window],
        }

    def __repr__(self) -> str:
        return f"RandomTokenWindow(size={self.size}, keys={list(self.keys)})"
