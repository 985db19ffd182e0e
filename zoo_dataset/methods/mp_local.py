"""Layer-wise magnitude-pruning twins: the plug-in proof of the method registry, in one file.

Each layer's weights are pruned to the level on their own (``torch.nn.utils.prune.l1_unstructured``
applied per layer, as Gale et al. 2019 compare against global pruning), with MP's levels, epochs,
learning rate and data order, so an ``mp_local`` twin differs from its ``mp`` twin only in where
the mask falls. Everything else (fine-tuning, batched hooks, stored arrays) is MP's.

Ties: as for the global mask, a stable sort of magnitudes in layout order: among equal magnitudes
at a layer's threshold the weight that comes first is pruned first.
"""

from __future__ import annotations

import numpy as np

from ..layout import ParameterLayout
from ..sparsify.magnitude import prune_count
from .mp import MagnitudePruning


class LocalMagnitudePruning(MagnitudePruning):
    """Every layer pruned to the level separately (``round(level * n)`` of its ``n`` weights)."""

    name = "mp_local"
    label = "MP (layer-wise)"
    description = "layer-wise magnitude-pruning twins: each layer pruned to the level on its own, then fine-tuning"
    default = False  # opt-in: `zoo-build --stages mp_local` (needs the original population)
    order = 11

    def noise_stream(self) -> str:
        return "mp"  # MP's data order at the same level and seed: the pair differs only in its mask

    def mask(self, flat: np.ndarray, layout: ParameterLayout, level: float) -> np.ndarray:
        keep = np.ones(layout.num_params, dtype=bool)
        for entry in layout.weight_entries():
            magnitudes = np.abs(np.asarray(flat[entry.slice], dtype=np.float32))
            smallest_first = np.argsort(magnitudes, kind="stable")
            keep[entry.offset + smallest_first[: prune_count(level, entry.size)]] = False
        return keep


METHOD = LocalMagnitudePruning()
