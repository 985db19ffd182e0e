"""The units a twin dataset serves (model, level) and their recorded properties, from one store."""

from __future__ import annotations

import numpy as np
import pandas as pd

from zoo_dataset.errors import StoreError, ZooSpecError
from zoo_dataset.store import ZooStore
from zoo_dataset.store.tables import SPLITS

METHODS = ("mp", "vd")
FACTORS = ("seed", "activation", "optimizer", "lr", "weight_decay", "dropout", "init")
NOT_PROPERTIES = {"model_id", "population", "level", "shard", "row"}


class TwinIndex:
    """Pairs of (original model, twin) of one method, level selection and model split.

    ``level=None`` selects every level the method recorded (MP: one unit per model and level).
    ``split=None`` selects every model. Only models packed in both populations are served.
    """

    def __init__(self, store: ZooStore, method: str, level: float | None, split: str | None):
        if method not in METHODS:
            raise ZooSpecError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if method not in store.populations:
            have = ", ".join(p for p in store.populations if p in METHODS) or "none"
            raise StoreError(
                f"{store.zoo_dir} holds no {method} twins (twins it has: {have}); "
                f"build them with `zoo-build --stages {method}`"
            )
        self.store, self.method = store, method
        self.info = store.population(method)
        self.levels = self._levels(level)
        self.model_ids = self._models(split)
        self.units = [(m, lv) for m in self.model_ids for lv in self.levels]
        self.factors = self._factors()
        self.property_names, self._properties = self._load_properties()

    @property
    def num_states(self) -> int:
        """Recorded states per twin (epoch 0 included)."""
        return self.info.epochs + 1

    def resolve_epoch(self, epoch: int) -> int:
        n = self.num_states
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer):
            raise TypeError(f"epoch must be an int (-1 = last), got {epoch!r}")
        if not -n <= epoch < n:
            raise StoreError(
                f"epoch {epoch} out of range: {self.method} twins record epochs 0..{n - 1} (or -1 = last)"
            )
        return int(epoch) % n

    def properties(self, population: str, model_id: int, level: float) -> np.ndarray:
        """[states, properties] float32 for one unit (original: level 0)."""
        return self._properties[(population, model_id, round(float(level), 6))]

    def _levels(self, level: float | None) -> list[float]:
        levels = self.info.levels
        if level is None:
            return list(levels)
        level = float(level) / 100 if float(level) > 1 else float(level)
        matches = [lv for lv in levels if abs(lv - level) < 1e-6]
        if not matches:
            raise StoreError(f"level {level} not recorded for {self.method} twins (levels: {levels})")
        return matches

    def _models(self, split: str | None) -> list[int]:
        models = self.store.models()
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

    def _load_properties(self) -> tuple[list[str], dict[tuple[str, int, float], np.ndarray]]:
        frames = [self.store.states(p) for p in ("original", self.method)]
        states = pd.concat(frames, ignore_index=True)
        states = states[states.model_id.isin(self.model_ids)].sort_values(
            ["population", "model_id", "level", "epoch"]
        )
        names = [
            c for c in states.columns if c not in NOT_PROPERTIES and pd.api.types.is_numeric_dtype(states[c])
        ]
        keys = [states[c].to_numpy() for c in ("population", "model_id", "level")]
        values = states[names].to_numpy(np.float32)
        starts = np.flatnonzero(np.any([k[1:] != k[:-1] for k in keys], axis=0)) + 1  # rows sorted by unit
        table = {}
        for lo, hi in zip(np.r_[0, starts], np.r_[starts, len(values)], strict=True):
            table[(str(keys[0][lo]), int(keys[1][lo]), round(float(keys[2][lo]), 6))] = values[lo:hi]
        return names, table
