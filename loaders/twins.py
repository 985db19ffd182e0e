"""The units a twin dataset serves (model, level) and their recorded properties, from one store."""

from __future__ import annotations

import numpy as np
import pandas as pd

from zoo_dataset.errors import StoreError, ZooSpecError, ZooTypeError
from zoo_dataset.methods import twin_methods
from zoo_dataset.specs import parse_level
from zoo_dataset.store import ZooStore
from zoo_dataset.store.reader import match_level
from zoo_dataset.store.tables import SPLITS

FACTORS = ("seed", "activation", "optimizer", "lr", "weight_decay", "dropout", "init")
NOT_PROPERTIES = {"model_id", "population", "level", "shard", "row"}


class TwinIndex:
    """Pairs of (original model, twin) of one method, level selection and model split.

    ``level=None`` selects every level the method recorded (MP: one unit per model and level).
    ``split=None`` selects every model. Only models packed in both populations are served.
    """

    def __init__(self, store: ZooStore, method: str, level: float | None, split: str | None):
        twins = [m.name for m in twin_methods()]
        if method not in twins:
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
        self.model_ids = self._models(split)
        self.level_indices = [store.level_index(method, lv) for lv in self.levels]
        self.units = [(m, li) for m in self.model_ids for li in self.level_indices]
        self.factors = self._factors()
        self.property_names: dict[str, list[str]] = {}
        self._properties: dict[tuple[str, int, int], np.ndarray] = {}
        for population in ("original", method):
            self.property_names[population] = self._load_properties(population)

    @property
    def num_states(self) -> int:
        """Recorded states per twin (epoch 0 included)."""
        return self.info.epochs + 1

    def resolve_epoch(self, epoch: int) -> int:
        n = self.num_states
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
            raise ZooTypeError(
                f"epoch must be an int (-1 = last), not type {type(epoch).__name__}; "
                "ZooTrajectoryDataset serves every epoch"
            )
        if not -n <= epoch < n:
            raise StoreError(
                f"epoch {epoch} out of range: {self.method} twins record epochs 0..{n - 1} (or -1 = last)"
            )
        return int(epoch) % n

    def properties(self, population: str, model_id: int, level_index: int) -> np.ndarray:
        """[states, properties] float32 for one unit (original: level index 0)."""
        return self._properties[(population, model_id, level_index)]

    def _levels(self, level: float | None) -> list[float]:
        levels = self.info.levels
        if level is None:
            return list(levels)
        if isinstance(level, bool) or not isinstance(level, (int, float, np.integer, np.floating)):
            raise ZooTypeError(f"level must be a number (0.5 or 50) or None, not type {type(level).__name__}")
        level = 0.0 if float(level) == 0 else parse_level(level)  # 0: the one level of twins without levels
        if match_level(levels, level) is None:
            raise StoreError(f"level {level} not recorded for {self.method} twins (levels: {levels})")
        return [levels[match_level(levels, level)]]

    def _models(self, split: str | None) -> list[int]:
        models = self.store.models()
        if split is not None and not isinstance(split, str):
            raise ZooTypeError(f"split must be a str ({', '.join(SPLITS)}) or None, not type {type(split).__name__}")
        if split is not None:
            if split not in SPLITS:
                raise ZooSpecError(
                    f"unknown split {split!r}; choose one of {', '.join(SPLITS)} or None for all"
                )
            models = models[models.split == split]
        packed = self._packed("original") & self._packed(self.method)
        ids = sorted(int(m) for m in models.model_id if int(m) in packed)
        if not ids:
            raise StoreError(
                f"split {split!r} of {self.store.zoo_dir} has no models with {self.method} twins"
            )
        return ids

    def _packed(self, population: str) -> set[int]:
        return {m for s in self.store.population(population).shards for m in s.model_ids}

    def _factors(self) -> dict[int, dict[str, object]]:
        table = self.store.models().set_index("model_id")
        # to_dict gives plain Python values (not numpy scalars): items need no conversion per read
        return table.loc[self.model_ids, list(FACTORS)].to_dict("index")

    def _load_properties(self, population: str) -> list[str]:
        """Index the population's per-state properties by unit; returns the property names.

        A property the population does not record for these models (NaN, e.g. an original's
        agreement with itself) is left out rather than served as a placeholder.
        """
        states = self.store.states(population)
        states = states[states.model_id.isin(self.model_ids)].sort_values(["model_id", "level", "epoch"])
        names = [
            c for c in states.columns
            if c not in NOT_PROPERTIES and pd.api.types.is_numeric_dtype(states[c]) and states[c].notna().all()
        ]
        levels = self.store.population(population).levels
        level_of = {lv: match_level(levels, lv) for lv in states.level.unique()}
        keys = np.stack([states.model_id.to_numpy(), states.level.map(level_of).to_numpy()], axis=1)
        values = states[names].to_numpy(np.float32)
        starts = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1  # rows sorted by unit
        for lo, hi in zip(np.r_[0, starts], np.r_[starts, len(values)], strict=True):
            self._properties[(population, int(keys[lo, 0]), int(keys[lo, 1]))] = values[lo:hi]
        return names
