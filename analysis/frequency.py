"""Per-weight sparsification frequency (Figure 3): how often each weight is pruned across a population."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoo_dataset.store import ZooStore


def pruned_frequency(
    store: ZooStore, population: str, epochs: Sequence[int], level: float | None = None
) -> dict[int, dict[str, np.ndarray]]:
    """``{epoch: {layer: [out, fan_in] fraction of models with that weight pruned}}``.

    Pruned means ``masks`` is False (MP: removed by pruning, VD: log-alpha at or above the
    threshold). Each weight tensor is shown as [output neurons, inputs x kernel].
    """
    model_ids = [m for shard in store.population(population).shards for m in shard.model_ids]
    total = None
    for model_id in model_ids:
        masks = store.array("masks", population, model_id, slice(None), level)[list(epochs)]
        pruned = (~masks).astype(np.float64)
        total = pruned if total is None else total + pruned
    frequency = total / len(model_ids)
    return {
        epoch: {e.layer: frequency[i, e.slice].reshape(e.shape[0], -1) for e in store.layout.weight_entries()}
        for i, epoch in enumerate(epochs)
    }
