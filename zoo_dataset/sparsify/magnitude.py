"""Global unstructured magnitude pruning over a flat parameter vector.

The mask is the one ``torch.nn.utils.prune.global_unstructured(params, L1Unstructured,
amount=level)`` computes when ``params`` are the weights of every conv and linear layer in
forward order (biases are never pruned, as in the paper's parameter counts): the
``round(level * n_weights)`` weights of smallest absolute value are removed.

Ties: torch picks the pruned weights with ``torch.topk``, whose choice among equal magnitudes
is unspecified. Here the order is a *stable* sort of magnitudes over the weights in layout
order (conv1.weight, conv2.weight, ..., fc2.weight, each row-major), so among weights of equal
magnitude at the threshold the one that comes first in the flat vector is pruned first. On
weights without ties at the threshold (any trained model) both give the same mask.
"""

from __future__ import annotations

import numpy as np

from ..errors import ZooSpecError
from ..layout import ParameterLayout


def prune_count(level: float, n_weights: int) -> int:
    """Number of weights pruned at ``level``: torch's ``round(amount * n)`` (Python rounding)."""
    if not 0.0 <= level <= 1.0:
        raise ZooSpecError(f"sparsity level {level} out of range: it must lie in [0, 1]")
    return round(level * n_weights)


def global_magnitude_mask(flat: np.ndarray, layout: ParameterLayout, level: float) -> np.ndarray:
    """Keep-mask [P] (True = kept) pruning the smallest-magnitude weights of ``flat`` to ``level``.

    Bias entries are always True. ``flat`` is one state in ``layout`` (e.g. an original's last epoch).
    """
    flat = np.asarray(flat)
    if flat.shape != (layout.num_params,):
        raise ZooSpecError(f"expected one flat state of {layout.num_params} parameters, got {flat.shape}")
    weight_positions = np.flatnonzero(layout.weight_mask())
    magnitudes = np.abs(flat[weight_positions].astype(np.float32))
    smallest_first = np.argsort(magnitudes, kind="stable")
    keep = np.ones(layout.num_params, dtype=bool)
    keep[weight_positions[smallest_first[: prune_count(level, len(weight_positions))]]] = False
    return keep
