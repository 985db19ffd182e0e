"""Samples of the tasks only twin zoos can pose: one row per model, its dense original's final weights.

Task 2 (twin prediction) predicts from them what sparsifying the model gives: its MP twin's test
accuracy at each level and its VD twin's final accuracy and sparsity. Task 3 (zero-shot masks)
fits mask predictors on them with the VD twin's log-alphas and keep-mask beside each original. A
model whose original or twin diverged (NaN or infinite weights at the state read) is left out:
its targets are not a property of a trained network.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from zoo_dataset.errors import StoreError
from zoo_dataset.store import ZooStore
from zoo_dataset.store.tables import DIVERGED

from .samples import Population, Samples, population_samples

VD_TARGETS = ("test_acc", "sparsity")  # the VD twin's, at its last epoch


def originals(store: ZooStore, model_ids: Sequence[int]) -> Samples:
    """The originals of ``model_ids`` at their last recorded epoch (diverged ones left out)."""
    return population_samples(store, Population("original"), model_ids, [store.population("original").epochs])


def _last_states(store: ZooStore, method: str, model_ids: Sequence[int], level: float | None = None) -> pd.DataFrame:
    """The last recorded state of each model of ``method`` (at ``level``), indexed by model id;
    diverged states are left out."""
    table = store.states(method)
    if level is not None:
        table = table[np.isclose(table.level.astype(float), level)]
    table = table[table.model_id.isin(list(model_ids)) & (table.epoch == store.population(method).epochs)]
    if DIVERGED in table:
        table = table[~table[DIVERGED].astype(bool)]
    return table.set_index(table.model_id.astype(np.int64))


def twin_targets(store: ZooStore, levels: Sequence[float] | None = None) -> list[tuple[str, str, float | None]]:
    """(target name, population, level) of task 2 in this store: ``mp@L/test_acc`` for each stored
    MP level (those in ``levels`` if given), then ``vd/test_acc`` and ``vd/sparsity``."""
    targets = []
    if "mp" in store.populations:
        for level in store.population("mp").levels:
            if levels is None or any(np.isclose(level, v) for v in levels):
                targets.append((f"{Population('mp', level).name}/test_acc", "mp", float(level)))
    if "vd" in store.populations:
        targets += [(f"vd/{name}", "vd", None) for name in VD_TARGETS]
    return targets


def twin_samples(store: ZooStore, model_ids: Sequence[int], levels: Sequence[float] | None = None) -> Samples:
    """Task 2: each original's last-epoch weights, with targets ``mp@L/test_acc`` (the MP twin's
    last epoch at each level) and ``vd/test_acc``, ``vd/sparsity`` (the VD twin's last epoch).
    Only models with every target are kept."""
    targets = twin_targets(store, levels)
    if not targets:
        raise StoreError(f"{store.zoo_dir} has no MP or VD twins (at the chosen levels): twin prediction needs them")
    columns = {}
    for name, method, level in targets:
        column = name.rsplit("/", 1)[1]
        columns[name] = _last_states(store, method, model_ids, level)[column]
    frame = pd.DataFrame(columns).dropna()
    if frame.empty:
        raise StoreError(f"none of the chosen models of {store.zoo_dir} has every twin target (a twin missing "
                         "or diverged)")
    samples = originals(store, sorted(int(m) for m in frame.index))
    frame = frame.loc[samples.model_ids]
    samples.targets = {name: frame[name].to_numpy(dtype=np.float64) for name in columns}
    return samples


def mask_samples(store: ZooStore, model_ids: Sequence[int]) -> Samples:
    """Task 3: each original's last-epoch weights, with its VD twin's last-epoch log-alphas
    (``extra["vd_log_alpha"]``, float32) and keep-mask (``extra["vd_keep"]``, bool), and the VD
    twin's ``vd/test_acc`` and ``vd/sparsity`` as targets. Its trajectory too: log-alphas
    ``extra["vd_log_alpha_epochs"]`` [M, E, P] and sparsity ``extra["vd_sparsity_epochs"]`` [M, E]
    at the epochs ``extra["vd_epochs"]`` [M, E] (:func:`trajectory_epochs`)."""
    if "vd" not in store.populations:
        raise StoreError(f"{store.zoo_dir} has no VD twins: zero-shot masks are scored against them")
    vd = _last_states(store, "vd", model_ids)
    if vd.empty:
        raise StoreError(f"none of the chosen models of {store.zoo_dir} has a VD twin (missing or diverged)")
    samples = originals(store, sorted(int(m) for m in vd.index))
    vd = vd.loc[samples.model_ids]
    last = store.population("vd").epochs
    epochs = trajectory_epochs(last + 1, len(samples), store.layout.num_params)
    log_alphas = np.stack([store.array("log_alpha", "vd", int(m), slice(None))[epochs] for m in samples.model_ids])
    sparsity = store.states("vd").pivot_table(index="model_id", columns="epoch", values="sparsity")
    samples.extra = {
        "vd_log_alpha": log_alphas[:, -1].astype(np.float32),
        "vd_keep": np.stack([store.array("masks", "vd", int(m), last) for m in samples.model_ids]).astype(bool),
        "vd_log_alpha_epochs": log_alphas.astype(np.float32),
        "vd_sparsity_epochs": sparsity.loc[samples.model_ids, epochs].to_numpy(dtype=np.float64),
        "vd_epochs": np.tile(np.asarray(epochs, dtype=np.int64), (len(samples), 1)),
    }
    samples.targets = {f"vd/{name}": vd[name].to_numpy(dtype=np.float64) for name in VD_TARGETS}
    return samples


TRAJECTORY_BYTES = 1 << 30  # the VD log-alphas of every recorded epoch, at most (float32)


def trajectory_epochs(recorded: int, models: int, params: int) -> list[int]:
    """The VD epochs whose log-alphas task 3 offers its predictors (``extra["vd_log_alpha_epochs"]``):
    every recorded epoch, or as many evenly spaced ones (the last included) as fit in
    :data:`TRAJECTORY_BYTES`: a zero-shot predictor aims at the epoch whose sparsity is nearest its
    target, and 30 000 models x 26 epochs would not fit in memory."""
    fit = max(1, TRAJECTORY_BYTES // max(1, 4 * models * params))
    if fit >= recorded:
        return list(range(recorded))
    return sorted({int(round(e)) for e in np.linspace(recorded - 1, 0, fit)})
