"""What every benchmark task reads from a store: flat states with their targets, grouped by model.

Inputs are the stored states with pruned entries as exact zeros (what a user of the population
loads). Diverged states (NaN or infinite weights, flagged in the states tables) are left out:
no predictor can read them, and the split file records how many were dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from zoo_dataset.errors import StoreError, ZooSpecError
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.store import ZooStore
from zoo_dataset.store.tables import DIVERGED

PROPERTIES = ("test_acc", "ggap", "sparsity", "epoch")  # task 1's targets (the paper's Table 3)


@dataclass(frozen=True)
class Population:
    """One population of a twin store: ``original``, ``vd`` or ``mp`` at one level."""

    method: str
    level: float | None = None

    @classmethod
    def parse(cls, text: str) -> Population:
        """``"original"``, ``"vd"`` or ``"mp@0.5"``."""
        method, _, level = text.partition("@")
        if method in ("original", "vd") and not level:
            return cls(method)
        if method == "mp" and level:
            try:
                return cls("mp", float(level))
            except ValueError:
                pass
        raise ZooSpecError(f"unknown population {text!r}: use original, vd or mp@LEVEL (e.g. mp@0.5)")

    @property
    def name(self) -> str:
        return self.method if self.level is None else f"{self.method}@{self.level:g}"


@dataclass
class Samples:
    """``weights`` [N, P] flat states (pruned entries exact zeros), one row per (model, epoch), with
    ``targets`` (name -> [N]) and the ``model_ids`` [N] that group rows for splits and scores."""

    weights: np.ndarray
    targets: dict[str, np.ndarray]
    model_ids: np.ndarray
    epochs: np.ndarray
    layout: ParameterLayout
    architecture: str
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # per-row side data (e.g. log-alphas)

    def __len__(self) -> int:
        return len(self.weights)

    def subset(self, rows: np.ndarray) -> Samples:
        """The rows at ``rows`` (indices or a boolean mask)."""
        rows = np.asarray(rows)
        return Samples(self.weights[rows], {k: v[rows] for k, v in self.targets.items()}, self.model_ids[rows],
                       self.epochs[rows], self.layout, self.architecture, {k: v[rows] for k, v in self.extra.items()})

    def of_models(self, model_ids: Sequence[int]) -> Samples:
        """The rows of the models in ``model_ids``."""
        return self.subset(np.isin(self.model_ids, np.asarray(list(model_ids), dtype=self.model_ids.dtype)))


def population_samples(
    store: ZooStore, population: Population, model_ids: Sequence[int], epochs: Sequence[int] | None = None
) -> Samples:
    """Every recorded state (or those at ``epochs``) of ``model_ids`` in ``population``, targets
    from its states table (:data:`PROPERTIES`)."""
    table = store.states(population.method)
    if population.level is not None:
        table = table[np.isclose(table.level.astype(float), population.level)]
        if table.empty:
            raise StoreError(f"{store.zoo_dir} has no MP twins at level {population.level:g} (levels: "
                             f"{', '.join(f'{v:g}' for v in store.population('mp').levels)})")
    table = table[table.model_id.isin(list(model_ids))]
    if epochs is not None:
        table = table[table.epoch.isin(list(epochs))]
    if DIVERGED in table:
        table = table[~table[DIVERGED].astype(bool)]
    if table.empty:
        raise StoreError(f"no states of population {population.name} for the chosen models and epochs in "
                         f"{store.zoo_dir}")
    table = table.sort_values(["model_id", "epoch"], kind="stable")
    masked = "masks" in store.population(population.method).arrays
    rows = []
    for model_id, group in table.groupby("model_id", sort=True):
        index = group.epoch.to_numpy()
        weights = store.weights(population.method, int(model_id), slice(None), population.level)[index]
        if masked:
            keep = store.array("masks", population.method, int(model_id), slice(None), population.level)[index]
            weights = np.where(keep, weights, 0.0)
        rows.append(weights.astype(np.float32))
    return Samples(
        weights=np.concatenate(rows),
        targets={name: table[name].to_numpy(dtype=np.float64) for name in PROPERTIES},
        model_ids=table.model_id.to_numpy(dtype=np.int64),
        epochs=table.epoch.to_numpy(dtype=np.int64),
        layout=store.layout,
        architecture=store.spec.architecture,
    )
