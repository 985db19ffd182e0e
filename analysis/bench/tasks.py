"""The benchmark's three tasks, run over a split and any predictors, scored as plain result rows.

1. ``properties``: test accuracy, generalization gap, sparsity and epoch from a state's weights, per
   population (the originals, the MP twins at each level, the VD twins).
2. ``twins``: from a dense original's final weights, its MP twins' accuracy per level and its VD
   twin's final accuracy and sparsity.
3. ``masks``: zero-shot masks at fixed sparsities, scored by ``mask_scores.score_masks``.

Properties are scored by R² (``sklearn.metrics.r2_score``) and Kendall's tau-b
(``scipy.stats.kendalltau``), over every held-out state and over each held-out model's last state.
A target without spread among the scored rows (the epoch of each model's last state, the
originals' sparsity) has neither: its value is ``None``. Every fit starts from a fresh copy of the
predictor given and from the same seeds, so one split and seed give the same numbers whichever
predictors run beside it. Over k folds each row holds the mean over folds (masks: over held-out
models) and the per-fold values.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from zoo_dataset.errors import ZooError, ZooSpecError
from zoo_dataset.store import ZooStore
from zoo_dataset.store.tables import DIVERGED

from .predictors import MaskPredictor, PropertyPredictor
from .samples import Population, Samples, population_samples
from .splits import Fold, Split
from .twins import mask_samples, twin_samples, twin_targets

TASKS = ("properties", "twins", "masks")
SPARSITIES = (0.5, 0.8, 0.9, 0.95)  # task 3's targets
PROPERTY_METRICS = ("r2", "kendall_tau")
KEY = ("task", "population", "target", "predictor", "metric", "over", "sparsity")


@dataclass
class BenchRun:
    """What :func:`run_benchmark` ran and measured: its settings, the result rows, wall seconds per
    task (loading, fitting, predicting and scoring, all folds), what was left out and why, and the
    diverged states (NaN or infinite weights) of the split's models that no task read, per population."""

    seed: int
    tasks: list[str]
    property_predictors: list[str]
    mask_predictors: list[str]
    sparsities: list[float]
    rows: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    diverged: dict[str, int] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """The seeds a predictor may draw from: Python's, numpy's global and torch's."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def property_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | None]:
    """R² and Kendall's tau-b of predictions; ``None`` where the targets do not vary (or < 2 rows)."""
    from scipy.stats import kendalltau
    from sklearn.metrics import r2_score

    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if len(y_true) < 2 or np.ptp(y_true) == 0:
        return {"r2": None, "kendall_tau": None}
    tau = kendalltau(y_true, y_pred).statistic
    return {"r2": float(r2_score(y_true, y_pred)), "kendall_tau": None if np.isnan(tau) else float(tau)}


def last_rows(samples: Samples) -> np.ndarray:
    """Indices of each model's last state in ``samples`` (by epoch)."""
    order = np.lexsort((samples.epochs, samples.model_ids))
    ids = samples.model_ids[order]
    return order[np.r_[ids[1:] != ids[:-1], True]]


def populations(store: ZooStore, split: Split) -> list[Population]:
    """Task 1's populations in this store: original, MP at each stored level (those of the split's
    level filter), VD."""
    out = [Population("original")] if "original" in store.populations else []
    if "mp" in store.populations:
        out += [Population("mp", float(level)) for level in store.population("mp").levels
                if split.levels is None or any(np.isclose(level, v) for v in split.levels)]
    return out + ([Population("vd")] if "vd" in store.populations else [])


def _has_states(store: ZooStore, population: Population, ids: Sequence[int], epochs: list[int] | None) -> bool:
    table = store.states(population.method)
    keep = table.model_id.isin(list(ids))
    if population.level is not None:
        keep &= np.isclose(table.level.astype(float), population.level)
    if epochs is not None:
        keep &= table.epoch.isin(epochs)
    if DIVERGED in table:
        keep &= ~table[DIVERGED].astype(bool)
    return bool(keep.any())


def diverged_counts(store: ZooStore, model_ids: Iterable[int]) -> dict[str, int]:
    """Diverged states per population among ``model_ids`` (the tasks leave them out)."""
    ids = list(model_ids)
    out = {}
    for name in store.populations:
        table = store.states(name)
        if DIVERGED in table:
            out[name] = int(table[DIVERGED][table.model_id.isin(ids)].astype(bool).sum())
    return out


def _fit_predict(template: PropertyPredictor, train: Samples, test: Samples, seed: int) -> tuple[dict, float]:
    """Fit a fresh copy of ``template`` and predict ``test``: (checked predictions, seconds)."""
    predictor = copy.deepcopy(template)
    seed_everything(seed)
    started = time.perf_counter()
    predictor.fit(train)
    predicted = predictor.predict(test)
    seconds = time.perf_counter() - started
    if not isinstance(predicted, Mapping):
        raise ZooError(f"predictor {template.name} returned {type(predicted).__name__}, not a dict of predictions")
    out = {}
    for target in test.targets:
        if target not in predicted:
            raise ZooError(f"predictor {template.name} predicted no {target!r} (it was fitted on it)")
        values = np.asarray(predicted[target], dtype=np.float64).reshape(-1)
        if len(values) != len(test) or not np.isfinite(values).all():
            raise ZooError(f"predictor {template.name} gave {len(values)} predictions of {target!r} for {len(test)} "
                           "states, or some not finite")
        out[target] = values
    return out, seconds


def _score_rows(task: str, population: str, name: str, test: Samples, predicted: dict, seconds: float,
                overs: Sequence[str]) -> list[dict]:
    rows = []
    for over in overs:
        index = np.arange(len(test)) if over == "states" else last_rows(test)
        for target, y in test.targets.items():
            for metric, value in property_scores(y[index], predicted[target][index]).items():
                rows.append({"task": task, "population": population, "target": target, "predictor": name,
                             "metric": metric, "over": over, "sparsity": None, "value": value,
                             "n_models": len(np.unique(test.model_ids[index])), "n_states": len(index),
                             "seconds": seconds})
    return rows


def run_benchmark(
    store: ZooStore,
    split: Split,
    property_predictors: Sequence[PropertyPredictor] = (),
    mask_predictors: Sequence[MaskPredictor] = (),
    tasks: Sequence[str] = TASKS,
    seed: int = 0,
    sparsities: Sequence[float] = SPARSITIES,
    data_dir: str | None = None,
    progress: bool = False,
) -> BenchRun:
    """Run ``tasks`` on every fold of ``split`` (a split of ``store``) and score each predictor."""
    split.check_store(store)
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ZooSpecError(f"unknown task(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(TASKS)}")
    for name, group in (("property", property_predictors), ("mask", mask_predictors)):
        names = [p.name for p in group]
        if len(set(names)) != len(names):
            raise ZooSpecError(f"two {name} predictors share a name ({', '.join(names)}): results are keyed by it")
    pops = populations(store, split)
    steps = {"properties": len(pops) * len(property_predictors), "twins": len(property_predictors),
             "masks": len(mask_predictors)}
    run = BenchRun(seed=seed, tasks=[t for t in TASKS if t in tasks], property_predictors=[p.name for p in
                   property_predictors], mask_predictors=[p.name for p in mask_predictors],
                   sparsities=[float(s) for s in sparsities],
                   diverged=diverged_counts(store, split.folds[0].train + split.folds[0].test))
    per_fold: list[list[dict]] = []
    bar = tqdm(total=len(split.folds) * sum(steps[t] for t in run.tasks), desc="zoo-bench", unit="fit",
               disable=not progress, dynamic_ncols=True)
    with bar:
        for i, fold in enumerate(split.folds):
            rows: list[dict] = []
            where = f" (fold {i + 1} of {len(split.folds)})" if len(split.folds) > 1 else ""
            for task in run.tasks:
                started = time.perf_counter()
                if not (mask_predictors if task == "masks" else property_predictors):
                    task_rows, notes = [], [f"{task}: no predictor given"]
                elif task == "properties":
                    task_rows, notes = _properties(store, split, fold, pops, property_predictors, seed, bar)
                elif task == "twins":
                    task_rows, notes = _twins(store, split, fold, property_predictors, seed, bar)
                else:
                    task_rows, notes = _masks(store, fold, mask_predictors, seed, sparsities, data_dir, bar)
                rows += task_rows
                run.notes += [f"{note}{where}" for note in notes]
                run.seconds[task] = run.seconds.get(task, 0.0) + time.perf_counter() - started
            per_fold.append(rows)
    run.rows = combine_folds(per_fold)
    run.notes = list(dict.fromkeys(run.notes))
    if not run.rows:
        raise ZooError(f"nothing was scored on {store.zoo_dir}: {'; '.join(run.notes) or 'no predictor given'}")
    return run


def _properties(store, split, fold: Fold, pops, predictors, seed, bar) -> tuple[list[dict], list[str]]:
    rows, notes = [], []
    for population in pops:
        if not all(_has_states(store, population, ids, split.epochs) for ids in (fold.train, fold.test)):
            notes.append(f"properties: {population.name} has no states of the chosen models and epochs; left out")
            bar.update(len(predictors))
            continue
        train = population_samples(store, population, fold.train, split.epochs)
        test = population_samples(store, population, fold.test, split.epochs)
        for template in predictors:
            bar.set_postfix_str(f"properties {population.name} {template.name}")
            predicted, seconds = _fit_predict(template, train, test, seed)
            rows += _score_rows("properties", population.name, template.name, test, predicted, seconds,
                                ("states", "models"))
            bar.update()
    return rows, notes


def _twins(store, split, fold: Fold, predictors, seed, bar) -> tuple[list[dict], list[str]]:
    if not twin_targets(store, split.levels):
        bar.update(len(predictors))
        return [], ["twins: the store has no MP or VD twins; left out"]
    train, test = twin_samples(store, fold.train, split.levels), twin_samples(store, fold.test, split.levels)
    rows = []
    for template in predictors:
        bar.set_postfix_str(f"twins {template.name}")
        predicted, seconds = _fit_predict(template, train, test, seed)
        rows += _score_rows("twins", "original", template.name, test, predicted, seconds, ("models",))
        bar.update()
    return rows, []


def _masks(store, fold: Fold, predictors, seed, sparsities, data_dir, bar) -> tuple[list[dict], list[str]]:
    if "vd" not in store.populations:
        bar.update(len(predictors))
        return [], ["masks: the store has no VD twins to score masks against; left out"]
    from zoo_dataset.data import load_dataset
    from zoo_dataset.model_layout import input_size

    from .mask_scores import score_masks  # deferred: it evaluates networks on the zoo's test images

    train, test = mask_samples(store, fold.train), mask_samples(store, fold.test)
    data = load_dataset(store.spec.dataset, input_size(store.spec), data_dir)
    rows = []
    for template in predictors:
        bar.set_postfix_str(f"masks {template.name}")
        predictor = copy.deepcopy(template)
        seed_everything(seed)
        started = time.perf_counter()
        predictor.fit(train)
        fitted = time.perf_counter() - started
        for row in score_masks(store, predictor, test, list(sparsities), data):
            rows.append({**row, "task": "masks", "predictor": template.name, "fit_seconds": fitted})
        bar.update()
    return rows, []


def combine_folds(per_fold: list[list[dict]]) -> list[dict]:
    """One row per key over the folds: the mean over folds of R² and tau, the mean over all held-out
    models of mask scores (with their std over those models, population std), counts and seconds
    summed, and the per-fold values in ``folds``. Mask rows carry their predictor's ``fit_seconds``
    beside the ``seconds`` their masks took at that sparsity."""
    groups: dict[tuple, list[dict]] = {}
    for rows in per_fold:
        for row in rows:
            groups.setdefault(tuple(row.get(k) for k in KEY), []).append(row)
    out = []
    for rows in groups.values():
        values = [r["value"] for r in rows]
        combined = {**rows[0], "folds": values, "n_models": sum(r["n_models"] for r in rows),
                    "n_states": sum(r.get("n_states") or 0 for r in rows),
                    "seconds": sum(r.get("seconds") or 0.0 for r in rows)}
        if "fit_seconds" in rows[0]:
            combined["fit_seconds"] = sum(r["fit_seconds"] for r in rows)
        if len(rows) > 1:
            combined["value"] = _mean_over_folds(rows)
            if "std" in rows[0]:
                combined["std"] = _pooled_std(rows, combined["value"])
        out.append(combined)
    return out


def _mean_over_folds(rows: list[dict]) -> float | None:
    known = [r for r in rows if r["value"] is not None]
    if not known:
        return None
    if known[0]["metric"] in PROPERTY_METRICS:
        return float(np.mean([r["value"] for r in known]))
    weights = [r["n_models"] for r in known]
    return float(np.average([r["value"] for r in known], weights=weights))


def _pooled_std(rows: list[dict], mean: float | None) -> float | None:
    known = [r for r in rows if r["value"] is not None and r.get("std") is not None]
    if mean is None or not known:
        return None
    n = sum(r["n_models"] for r in known)
    second = sum(r["n_models"] * (r["std"] ** 2 + r["value"] ** 2) for r in known) / n
    return float(np.sqrt(max(second - mean**2, 0.0)))
