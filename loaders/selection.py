"""Selecting models by generating factors and by a predicate on their recorded properties.

The result is a list of model ids for the datasets' ``models=`` argument, so a selection
composes with splits, folds and every dataset alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from zoo_dataset.errors import StoreError, ZooSpecError, ZooTypeError
from zoo_dataset.store import ZooStore

from .resolve import open_store
from .splits import split_model_ids
from .twins import FACTORS, NOT_PROPERTIES


def select_models(
    zoo: str | Path | ZooStore,
    split: str | None = None,
    factors: Mapping[str, Any] | None = None,
    where: Callable[[dict[str, float]], bool] | None = None,
    epoch: int = -1,
    root: str | Path | None = None,
) -> list[int]:
    """Sorted ids of the models of ``split`` whose factors match and whose original satisfies ``where``.

    ``factors``: factor name -> a value or a list of accepted values, e.g.
    ``{"activation": ["relu", "gelu"], "optimizer": "adam"}``. ``where``: called with the
    original's recorded properties at ``epoch`` (default the last) as a dict of floats, e.g.
    ``lambda p: p["test_acc"] > 0.5``; a model whose properties there are not all finite fails it.
    """
    store = zoo if isinstance(zoo, ZooStore) else open_store(zoo, root)
    ids = split_model_ids(store, split)
    table = store.models().set_index("model_id").loc[ids]
    for name, accepted in (factors or {}).items():
        if name not in FACTORS:
            raise ZooSpecError(f"unknown factor {name!r}; choose one of {', '.join(FACTORS)}")
        values = list(accepted) if isinstance(accepted, (list, tuple, set, range)) else [accepted]
        table = table[table[name].isin(values)]
    ids = [int(m) for m in table.index]
    if where is None:
        return ids
    if not callable(where):
        raise ZooTypeError(f"where must be a function of the properties dict, not type {type(where).__name__}")
    states = store.states("original")
    epochs = sorted(states.epoch.unique())
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or not -len(epochs) <= epoch < len(epochs):
        raise StoreError(f"epoch {epoch!r} is not a recorded epoch of the originals (0..{len(epochs) - 1}, -1 = last)")
    at = states[states.epoch == epochs[epoch]].set_index("model_id")
    names = [c for c in at.columns if c not in NOT_PROPERTIES and c != "epoch" and at[c].dtype.kind in "fiu"]
    names = [c for c in names if at[c].notna().any()]  # left out: what originals never record
    kept = []
    for model_id in ids:
        if model_id not in at.index:
            continue
        props = {k: float(v) for k, v in at.loc[model_id, names].items()}
        if all(np.isfinite(v) for v in props.values()) and where(props):
            kept.append(model_id)
    return kept
