"""The parameter layout: a model's parameters as one flat vector, and back.

Every stored state is a flat float32 vector of length ``P``. The layout names each slice
(``conv1.weight``...), its shape and offset, and whether it is a weight or a bias, so that readers
can rebuild per-layer tensors, masks over weights only, or a working ``nn.Module``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .architectures import parametrised_layers


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LayoutEntry:
    name: str  # state-dict key, e.g. "conv1.weight"
    layer: str  # e.g. "conv1"
    kind: Literal["weight", "bias"]
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.size)


class ParameterLayout:
    """Maps named parameter tensors to a flat vector in a fixed order (layer by layer, weight then bias)."""

    def __init__(self, entries: list[LayoutEntry]):
        self.entries = entries
        self.by_name = {e.name: e for e in entries}

    @classmethod
    def from_module(cls, model: nn.Module) -> ParameterLayout:
        entries, offset = [], 0
        for layer_name, layer in parametrised_layers(model):
            for kind in ("weight", "bias"):
                shape = tuple(getattr(layer, kind).shape)
                entries.append(LayoutEntry(f"{layer_name}.{kind}", layer_name, kind, shape, offset))
                offset += int(np.prod(shape))
        return cls(entries)

    @property
    def num_params(self) -> int:
        return sum(e.size for e in self.entries)

    @property
    def num_weights(self) -> int:
        return sum(e.size for e in self.entries if e.kind == "weight")

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(e.layer for e in self.entries))

    def weight_entries(self) -> list[LayoutEntry]:
        return [e for e in self.entries if e.kind == "weight"]

    def weight_mask(self) -> np.ndarray:
        """Boolean [P]: True where the flat vector holds a weight (not a bias)."""
        mask = np.zeros(self.num_params, dtype=bool)
        for e in self.weight_entries():
            mask[e.slice] = True
        return mask

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Named tensors (a state dict, extra keys ignored) to one flat vector."""
        return torch.cat([tensors[e.name].detach().reshape(-1).float().cpu() for e in self.entries])

    def flatten_module(self, model: nn.Module) -> torch.Tensor:
        return self.flatten(dict(model.named_parameters()))

    def unflatten(self, flat: torch.Tensor | np.ndarray) -> OrderedDict[str, torch.Tensor]:
        """A flat vector (or [..., P] batch) to named tensors with the layer shapes."""
        flat = torch.as_tensor(flat)
        if flat.shape[-1] != self.num_params:
            raise ValueError(f"flat vector has {flat.shape[-1]} entries; this layout has {self.num_params}")
        lead = flat.shape[:-1]
        return OrderedDict((e.name, flat[..., e.slice].reshape(*lead, *e.shape)) for e in self.entries)

    def load_into(self, model: nn.Module, flat: torch.Tensor | np.ndarray) -> nn.Module:
        """Copy a flat vector into a module built with the same architecture."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.unflatten(flat).items():
                params[name].copy_(value.to(params[name].dtype))
        return model

    def layer_sparsity(self, flat: np.ndarray) -> dict[str, float]:
        """Fraction of exactly-zero weights per layer (biases excluded); ``flat`` may be [..., P]."""
        flat = np.asarray(flat)
        return {e.layer: (flat[..., e.slice] == 0).mean(axis=-1) for e in self.weight_entries()}

    def global_sparsity(self, flat: np.ndarray) -> float:
        flat = np.asarray(flat)
        return (flat[..., self.weight_mask()] == 0).mean(axis=-1)

    def to_dict(self) -> list[dict[str, Any]]:
        return [asdict(e) | {"shape": list(e.shape)} for e in self.entries]

    @classmethod
    def from_dict(cls, data: list[dict[str, Any]]) -> ParameterLayout:
        """The layout a manifest records, refused (ValueError) unless its entries tile the flat
        vector: offsets from 0 without gap or overlap, each the sum of the sizes before it, positive
        whole-number shapes, names ``<layer>.<kind>``, each layer a weight and then its bias. One
        changed digit would otherwise shift every view of every stored state."""
        if not isinstance(data, list) or not data:
            raise ValueError("a parameter layout is a non-empty list of entries")
        entries, offset = [], 0
        for i, d in enumerate(data):
            if not isinstance(d, dict) or set(d) != {"name", "layer", "kind", "shape", "offset"}:
                raise ValueError(f"layout entry {i} is not an object with name, layer, kind, shape and offset")
            shape, kind = d["shape"], ("weight", "bias")[i % 2]
            if not (isinstance(shape, list) and shape and all(_whole(n) and n > 0 for n in shape)):
                raise ValueError(f"layout entry {i} has the shape {shape!r}, not a list of positive whole numbers")
            paired = kind == "weight" or d["layer"] == data[i - 1]["layer"]  # a bias follows its layer's weight
            if d["kind"] != kind or not isinstance(d["layer"], str) or d["name"] != f"{d['layer']}.{kind}" or (
                    not paired):
                raise ValueError(f"layout entry {i} ({d['name']!r}) is not the {kind} of its layer")
            if not _whole(d["offset"]) or d["offset"] != offset:
                raise ValueError(f"layout entry {d['name']!r} starts at {d['offset']!r}; the entries before it "
                                 f"end at {offset}")
            entries.append(LayoutEntry(d["name"], d["layer"], kind, tuple(shape), offset))
            offset += entries[-1].size
        if len(data) % 2 or len({e.layer for e in entries}) != len(entries) // 2:
            raise ValueError("a parameter layout holds each layer once, its weight then its bias")
        return cls(entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParameterLayout) and self.entries == other.entries

    def __repr__(self) -> str:
        return f"ParameterLayout({self.num_params} params, {self.num_weights} weights, layers={self.layers})"
