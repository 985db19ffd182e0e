"""Selecting models by generating factors and by predicates on their recorded properties.

The result is a list of model ids for the datasets' ``models=`` argument, so a selection
composes with splits, folds and every dataset alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zoo_dataset.errors import StoreError, ZooSpecError, ZooTypeError
from zoo_dataset.store import ZooStore
from zoo_dataset.store.reader import match_level

from .resolve import open_store
from .splits import split_model_ids
from .twins import FACTORS, NOT_PROPERTIES

Predicate = Callable[[dict[str, float]], bool]
Where = Predicate | Mapping[str | tuple[str, float], Predicate]


def select_models(
    zoo: str | Path | ZooStore,
    split: str | None = None,
    factors: Mapping[str, Any] | None = None,
    where: Where | None = None,
    epoch: int = -1,
    root: str | Path | None = None,
) -> list[int]:
    """Sorted ids of the models of ``split`` whose factors match and whose states satisfy ``where``.

    ``factors``: factor name -> a value or a list of accepted values, e.g.
    ``{"activation": ["relu", "gelu"], "optimizer": "adam"}``.

    ``where``: a predicate on the original's recorded properties at ``epoch`` (a dict of floats),
    e.g. ``lambda p: p["test_acc"] > 0.5``, or a dict of predicates by population: ``"original"``,
    a twin method without levels (``"vd"``) or a twin method and one of its levels
    (``("mp", 0.9)``), e.g. ``{"original": lambda p: p["test_acc"] > 0.5, "vd": lambda p:
    p["sparsity"] > 0.8}``. Each predicate sees its population's properties at ``epoch`` of that
    population's own recorded epochs (default the last; negative counts from the end). A model
    passes if every predicate holds; a model without that state, or whose properties there are
    not all finite, fails.
    """
    store = zoo if isinstance(zoo, ZooStore) else open_store(zoo, root)
    ids = split_model_ids(store, split)
    table = store.models().set_index("model_id").loc[ids]
    for name, accepted in (factors or {}).items():
        if name not in FACTORS:
            raise ZooSpecError(f"unknown factor {name!r}; choose one of {', '.join(FACTORS)}")
        values = list(accepted) if isinstance(accepted, (list, tuple, set, range)) else [accepted]
        table = table[table[name].isin(values)]
    kept = [int(m) for m in table.index]
    for (population, level), predicate in _predicates(store, where).items():
        at = _properties_at(store, population, level, epoch)
        kept = [m for m in kept if m in at.index and _holds(predicate, at.loc[m])]
    return kept


def _predicates(store: ZooStore, where: Where | None) -> dict[tuple[str, float], Predicate]:
    """``where`` as {(population, stored level): predicate}, each key checked against the store."""
    if where is None:
        return {}
    if callable(where):
        where = {"original": where}
    if not isinstance(where, Mapping):
        raise ZooTypeError(
            f"where must be a function of the properties dict or a dict of them by population, "
            f"not type {type(where).__name__}"
        )
    out = {}
    for key, predicate in where.items():
        population, level = key if isinstance(key, tuple) and len(key) == 2 else (key, None)
        if not isinstance(population, str):
            raise ZooTypeError(f"where keys are a population name or (method, level), not {key!r}")
        if population not in store.populations:
            raise StoreError(f"where names {population!r}, which {store.zoo_dir} does not hold "
                             f"(it holds {', '.join(store.populations)})")
        if not callable(predicate):
            raise ZooTypeError(f"where[{key!r}] must be a function of the properties dict, "
                               f"not type {type(predicate).__name__}")
        levels = store.population(population).levels
        if level is None:
            if len(levels) > 1:
                raise ZooSpecError(f"{population} twins have levels {levels}: key where with one, "
                                   f"e.g. ({population!r}, {levels[-1]})")
            index = 0
        else:
            index = match_level(levels, level)
            if index is None:
                raise StoreError(f"level {level} not recorded for {population} (levels: {levels})")
        out[(population, levels[index])] = predicate
    return out


def _properties_at(store: ZooStore, population: str, level: float, epoch: int) -> pd.DataFrame:
    """The recorded properties of every model's ``population`` state at ``level`` and ``epoch``,
    indexed by model id (the columns the population records)."""
    states = store.states(population)
    levels = store.population(population).levels
    states = states[states.level.map(lambda lv: levels[match_level(levels, lv)]) == level]
    epochs = sorted(states.epoch.unique())
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or not -len(epochs) <= epoch < len(epochs):
        raise StoreError(f"epoch {epoch!r} is not a recorded epoch of {population} (0..{len(epochs) - 1}, "
                         "negative counts from the end)")
    at = states[states.epoch == epochs[epoch]].set_index("model_id")
    names = [c for c in at.columns if c not in NOT_PROPERTIES and c != "epoch" and at[c].dtype.kind in "fiu"]
    return at[[c for c in names if at[c].notna().any()]]  # left out: what the population never records


def _holds(predicate: Predicate, row: pd.Series) -> bool:
    props = {k: float(v) for k, v in row.items()}
    return all(np.isfinite(v) for v in props.values()) and bool(predicate(props))
