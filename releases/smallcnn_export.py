"""Export one population of any store in the Small CNN Zoo's format, for the tools that read it
(NFN, NFT, ScaleGMN, neural graphs): ``weights.npy``, ``layout.csv``, ``metrics.csv.gz`` and a split file.

One row per model and stored epoch, models in id order, epochs ascending; ``step`` is the epoch
(an ingested Small CNN Zoo keeps its real steps). Twins are written as they are evaluated: the
weights their mask drops are exact zeros. The metrics carry the field's names (``test_accuracy``,
``train_accuracy``, ``test_loss``, ``train_loss``, ``config.*``, ``modeldir``) and ours (``model_id``,
``population``, ``level``, ``epoch``, ``ggap``, ``sparsity``..., ``agreement``, ``split``).
``<dataset>_split.csv`` lists every row, the store's train models first, then val, then test; the
``split`` column says which. Every file is written under a temporary name and renamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from zoo_dataset.errors import StoreUsageError
from zoo_dataset.specs import parse_level
from zoo_dataset.store import ZooStore
from zoo_dataset.store.files import atomic_path
from zoo_dataset.store.reader import match_level

from .smallcnn_format import (
    CONFIG,
    FACTOR_COLUMNS,
    L2REG,
    LAYOUT,
    METRIC_NAMES,
    METRICS,
    SPLIT_SUFFIX,
    WEIGHTS,
    layout_frame,
    tf_permutation,
    tf_variables,
)

INTERNAL = ("shard", "row")  # where a state lies in the store: meaningless outside it
SPLIT_ORDER = ("train", "val", "test")


@dataclass(frozen=True)
class Selection:
    """``original``, ``vd``, ``mp@0.5``: a population and, for one with levels, one level."""

    population: str
    level: float | None

    @classmethod
    def parse(cls, text: str) -> Selection:
        name, _, level = text.partition("@")
        return cls(name, parse_level(level) if level else None)

    def __str__(self) -> str:
        return self.population + (f"@{self.level:g}" if self.level is not None else "")


def check_selection(store: ZooStore, selection: Selection) -> float:
    """The stored level ``selection`` names (StoreUsageError, with what the store has, otherwise)."""
    info = store.population(selection.population)
    if selection.level is None:
        if len(info.levels) > 1:
            raise StoreUsageError(f"population {selection.population} has levels {info.levels}: name one, "
                                  f"e.g. {selection.population}@{info.levels[0]:g}")
        return info.levels[0]
    index = match_level(info.levels, selection.level)
    if index is None:
        raise StoreUsageError(f"population {selection.population} has no level {selection.level:g} "
                              f"(it has {', '.join(f'{lv:g}' for lv in info.levels)})")
    return info.levels[index]


def factor_columns(models: pd.DataFrame) -> pd.DataFrame:
    """The models' factors as the field's ``config.*`` columns: those the table holds (an ingested
    zoo's, as published), the others from our factors."""
    config = models[[c for c in models.columns if c.startswith(CONFIG)]].copy()
    for ours, theirs in FACTOR_COLUMNS.items():
        if theirs not in config.columns:
            config[theirs] = models[ours]
    if L2REG not in config.columns:
        config[L2REG] = models.weight_decay / 2  # Keras' l2(l) is our weight decay 2 l
    return config[sorted(config.columns)]


def metrics_frame(store: ZooStore, selection: Selection, level: float) -> pd.DataFrame:
    """One row per (model, epoch) in export order: the field's columns first, then ours."""
    states = store.states(selection.population)
    states = states[np.abs(states.level.to_numpy() - level) < 1e-6]
    states = states.sort_values(["model_id", "epoch"], kind="stable").reset_index(drop=True)
    models = store.models().set_index("model_id").loc[states.model_id]
    factors = factor_columns(models.reset_index()).reset_index(drop=True)
    modeldir = models["modeldir"] if "modeldir" in models else [f"{store.spec.name}/model_{m:05d}"
                                                                 for m in states.model_id]
    field = pd.DataFrame({"modeldir": list(modeldir),
                          "step": states.get("step", states.epoch),
                          **{theirs: states[ours] for ours, theirs in sorted(METRIC_NAMES.items(),
                                                                                key=lambda kv: kv[1])}})
    ours = states.drop(columns=[*INTERNAL, *METRIC_NAMES, *(["step"] if "step" in states else [])])
    ours["split"] = models["split"].to_numpy()
    return pd.concat([factors, field, ours], axis=1)


def export_smallcnnzoo(store: ZooStore, selection: Selection, out: Path | str, progress: bool = True) -> Path:
    """Write ``selection`` of ``store`` into the folder ``out`` (created; a link is refused)."""
    out = Path(out)
    if out.is_symlink():
        raise StoreUsageError(f"{out} is a symbolic link; export into a real folder")
    level = check_selection(store, selection)
    metrics = metrics_frame(store, selection, level)
    layout = store.layout
    variables = tf_variables(layout)
    perm = tf_permutation(variables, layout.num_params)
    masked = "masks" in store.population(selection.population).arrays
    ids = list(dict.fromkeys(metrics.model_id.tolist()))
    states = store.population(selection.population).epochs + 1
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS) as tmp:
        rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(metrics), layout.num_params))
        for i, model in enumerate(tqdm(ids, desc=f"exporting {selection}", unit="model", disable=not progress)):
            weights = store.array("weights", selection.population, model, slice(None), level)
            if masked:
                weights = np.where(store.array("masks", selection.population, model, slice(None), level), weights, 0)
            rows[i * states : (i + 1) * states, perm] = weights
        rows.flush()
        del rows
    with atomic_path(out / LAYOUT) as tmp:
        layout_frame(variables).to_csv(tmp, index=False)
    with atomic_path(out / METRICS) as tmp:
        metrics.to_csv(tmp, index=False, compression="gzip")
    order = np.concatenate([np.flatnonzero(metrics.split.to_numpy() == s) for s in SPLIT_ORDER])
    with atomic_path(out / f"{store.spec.dataset}{SPLIT_SUFFIX}") as tmp:
        pd.Series(order).to_csv(tmp, index=False, header=False)
    return out
