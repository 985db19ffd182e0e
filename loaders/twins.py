"""The units a twin dataset serves (model, level) and their recorded properties, from one store."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from zoo_dataset.errors import StoreError, ZooSpecError, ZooTypeError
from zoo_dataset.methods import twin_methods
from zoo_dataset.specs import parse_level
from zoo_dataset.store import ZooStore
from zoo_dataset.store.reader import match_level

from .splits import models_of_split, normalize_split

FACTORS = ("seed", "activation", "optimizer", "lr", "weight_decay", "dropout", "init")
NOT_PROPERTIES = {"model_id", "population", "level", "shard", "row"}


class TwinIndex:
    """Units of one population (``method``: a twin method, or ``"original"``), level selection,
    model split and model subset, with the recorded properties of the units.

    A unit is (model, level): MP twins have one per model and level, VD twins and originals one
    per model. ``level``: one level, a list of levels, or None (every level the method recorded).
    ``split=None`` selects every model; ``models`` selects those ids (all in ``split``). Only
    models packed in both the original and ``method`` populations are served.
    """

    def __init__(self, store: ZooStore, method: str, level: float | Sequence[float] | None, split: str | None,
                 models: Iterable[int] | None = None):
        twins = [m.name for m in twin_methods()]
        if method != "original" and method not in twins:
            raise ZooSpecError(f"unknown method {method!r}; choose one of {', '.join(twins)}")
        if method not in store.populations:
            have = ", ".join(p for p in store.populations if p in twins) or "none"
            raise StoreError(
                f"{store.zoo_dir} holds no {method} twins (twins it has: {have}); "
                f"build them with `zoo-build --stages {method}`"
            )
        self.store, self.method = store, method
        self.info = store.population(method)
        self.levels = self._levels(level)
        self.split = normalize_split(split)
        self.model_ids = self._models(self.split, models)
        self.level_indices = [store.level_index(method, lv) for lv in self.levels]
        self.units = [(m, li) for m in self.model_ids for li in self.level_indices]
        self.factors = self._factors()
        self.property_names: dict[str, list[str]] = {}
        self._properties: dict[tuple[str, int, int], np.ndarray] = {}
        for population in dict.fromkeys(("original", method)):
            self.property_names[population] = self._load_properties(population)

    @property
    def num_states(self) -> int:
        """Recorded states per unit (epoch 0 included)."""
        return self.info.epochs + 1

    def resolve_epoch(self, epoch: int) -> int:
        """One recorded epoch as an index into the states (``-1`` = the last)."""
        n = self.num_states
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
            raise ZooTypeError(
                f"epoch must be an int (-1 = last), a list or range of ints, or None (every epoch), "
                f"not type {type(epoch).__name__}"
            )
        if not -n <= epoch < n:
            what = "originals" if self.method == "original" else f"{self.method} twins"
            raise StoreError(
                f"epoch {epoch} out of range: {what} record epochs 0..{n - 1} (negative counts from the end: "
                f"-1 = last, -{n} = 0)"
            )
        return int(epoch) % n

    def resolve_epochs(self, epoch: int | Sequence[int] | range | None) -> list[int]:
        """The requested epochs, in the order given: an int, a list / tuple / range of ints, or
        None (every recorded epoch)."""
        if epoch is None:
            return list(range(self.num_states))
        if isinstance(epoch, (list, tuple, range)):
            if len(epoch) == 0:
                raise ZooSpecError("epoch is an empty list: ask for at least one epoch, or None for every epoch")
            return [self.resolve_epoch(e) for e in epoch]
        return [self.resolve_epoch(epoch)]

    def properties(self, population: str, model_id: int, level_index: int) -> np.ndarray:
        """[states, properties] float32 for one unit (original: level index 0)."""
        return self._properties[(population, model_id, level_index)]

    @property
    def has_levels(self) -> bool:
        """Whether the method records sparsity levels (MP); one without (VD) records the one level 0.0."""
        return list(self.info.levels) != [0.0]

    def _levels(self, level: float | Sequence[float] | None) -> list[float]:
        """The stored levels asked for, in the order given: one level, a list / tuple of levels, or None (all)."""
        levels = self.info.levels
        if level is None:
            return list(levels)
        asked = list(level) if isinstance(level, (list, tuple)) else [level]
        if not asked:
            raise ZooSpecError("level is an empty list: ask for at least one level, or None for every level")
        out = []
        for value in asked:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ZooTypeError(
                    f"level must be a number (0.5 or 50), a list of numbers or None, not type {type(value).__name__}"
                )
            value = 0.0 if float(value) == 0 else parse_level(value)  # 0: the one level of twins without levels
            index = match_level(levels, value)
            if index is None:
                raise StoreError(f"level {value} not recorded for {self.method} twins (levels: {levels})")
            if levels[index] in out:
                raise ZooSpecError(f"level {value} is asked for twice")
            out.append(levels[index])
        return out


    def _models(self, split: str | None, models: Iterable[int] | None) -> list[int]:
        packed = self._packed("original") & self._packed(self.method)
        ids = [m for m in models_of_split(self.store, split, models) if m in packed]
        if not ids:
            what = "originals" if self.method == "original" else f"{self.method} twins"
            subset = " among the models asked for" if models is not None else ""
            raise StoreError(f"split {split!r} of {self.store.zoo_dir} has no models with {what}{subset}")
        return ids

    def _packed(self, population: str) -> set[int]:
        return {m for s in self.store.population(population).shards for m in s.model_ids}

    def _factors(self) -> dict[int, dict[str, object]]:
        table = self.store.models().set_index("model_id")
        # to_dict gives plain Python values (not numpy scalars): items need no conversion per read
        return table.loc[self.model_ids, list(FACTORS)].to_dict("index")

    def _load_properties(self, population: str) -> list[str]:
        """Index the population's per-state properties by unit; returns the property names.

        A property the population does not record for these models (NaN in every state, e.g. an
        original's agreement with itself) is left out rather than served as a placeholder; a
        property recorded for some states is kept, NaN where a state has none (e.g. a diverged
        model: ``drop_nonfinite=True`` drops such states).
        """
        states = self.store.states(population)
        states = states[states.model_id.isin(self.model_ids)].sort_values(["model_id", "level", "epoch"])
        names = [
            c for c in states.columns
            if c not in NOT_PROPERTIES and pd.api.types.is_numeric_dtype(states[c]) and states[c].notna().any()
        ]
        levels = self.store.population(population).levels
        level_of = {lv: match_level(levels, lv) for lv in states.level.unique()}
        keys = np.stack([states.model_id.to_numpy(), states.level.map(level_of).to_numpy()], axis=1)
        values = states[names].to_numpy(np.float32)
        starts = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1  # rows sorted by unit
        for lo, hi in zip(np.r_[0, starts], np.r_[starts, len(values)], strict=True):
            self._properties[(population, int(keys[lo, 0]), int(keys[lo, 1]))] = values[lo:hi]
        return names
