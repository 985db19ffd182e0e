"""A collate for batches that mix architectures (a ``ConcatDataset`` of a CNN-s and a CNN-l zoo)
and for graph states, in every view.

Items of different architectures hold states of different shapes: a flat vector of 2464 or of
10565 parameters, conv kernels of 5 x 5 or 3 x 3, 48 or 93 tokens. :func:`collate_padded` pads
each tensor to the batch's largest shape (zeros at the end of every axis) and says which entries
are real in ``batch["real"]``; graph states (``torch_geometric.data.Data``) batch as a
``torch_geometric.data.Batch``, their feature widths padded the same way (``edge_valid`` then
marks the real entries of each edge's feature vector).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import default_collate

from zoo_dataset.errors import ZooSpecError

from .items import shared_items

STATES = ("original", "twin", "mask", "log_alpha")


def collate_padded(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``collate_shared`` (the keys every item has), with every tensor zero-padded to the batch's
    largest shape, and ``batch["real"][key]`` for each state key: the state's structure with a
    bool tensor per tensor of it, True at real entries (graph states have none: see above).

    ``DataLoader(ConcatDataset([cnn_s, cnn_l]), batch_size=32, collate_fn=collate_padded)``.
    """
    items = shared_items(batch)
    out = _collate(items)
    out["real"] = {key: _real([item[key] for item in items]) for key in STATES if key in items[0]}
    return out


def _collate(samples: list[Any]) -> Any:
    first = samples[0]
    geometric = sys.modules.get("torch_geometric.data")  # a graph state means torch-geometric is loaded
    if geometric is not None and isinstance(first, geometric.Data):
        from torch_geometric.data import Batch

        return Batch.from_data_list(_padded_graphs(samples))
    if isinstance(first, torch.Tensor):
        same = all(s.shape == first.shape for s in samples)
        return torch.stack(samples if same else _padded(samples))
    if isinstance(first, Mapping):
        return {key: _collate([s[key] for s in samples]) for key in first}
    if isinstance(first, list | tuple):
        if len({len(s) for s in samples}) > 1:
            raise ZooSpecError(f"cannot batch states of {sorted({len(s) for s in samples})} layers together")
        return [_collate(list(group)) for group in zip(*samples, strict=True)]
    return default_collate(samples)


def _real(samples: list[Any]) -> Any:
    """The structure of ``samples[0]`` with the padded real-entry mask of each tensor."""
    first = samples[0]
    if isinstance(first, torch.Tensor):
        if all(s.shape == first.shape for s in samples):  # nothing padded (one architecture): one allocation
            return torch.ones((len(samples), *first.shape), dtype=torch.bool)
        return torch.stack(_padded([torch.ones(s.shape, dtype=torch.bool) for s in samples]))
    if isinstance(first, Mapping):
        return {key: _real([s[key] for s in samples]) for key in first}
    if isinstance(first, list | tuple):
        return [_real(list(group)) for group in zip(*samples, strict=True)]
    return None


def _padded(tensors: list[torch.Tensor], keep: int | None = None) -> list[torch.Tensor]:
    """Each tensor zero-padded at the end of every axis (but ``keep``) to the largest size there."""
    if len({t.dim() for t in tensors}) > 1:
        raise ZooSpecError(f"cannot batch tensors of {sorted({t.dim() for t in tensors})} axes together "
                           "(items of architectures whose layers differ in kind)")
    largest = [max(sizes) for sizes in zip(*(t.shape for t in tensors), strict=True)]
    out = []
    for t in tensors:
        shape = [n if axis == keep else big for axis, (n, big) in enumerate(zip(t.shape, largest, strict=True))]
        if list(t.shape) == shape:
            out.append(t)
            continue
        padded = t.new_zeros(shape)
        padded[tuple(slice(0, n) for n in t.shape)] = t
        out.append(padded)
    return out


def _padded_graphs(graphs: list[Any]) -> list[Any]:
    """Copies of the graphs whose tensors are padded on every axis but the one torch_geometric
    concatenates along (nodes, edges)."""
    out = list(graphs)
    for key, first in graphs[0]:  # a Data iterates over (key, value)
        values = [g[key] for g in graphs]
        if not all(isinstance(v, torch.Tensor) for v in values) or all(v.shape == first.shape for v in values):
            continue
        cat = graphs[0].__cat_dim__(key, first)
        keep = cat % first.dim() if first.dim() else None
        for i, v in enumerate(_padded(values, keep)):
            if out[i] is graphs[i]:
                out[i] = copy.copy(graphs[i])  # shallow: the padded tensors replace the copy's own
            out[i][key] = v
    return out
