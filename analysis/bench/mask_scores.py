"""Scores of the masks task: a predictor's masks applied to held-out dense originals and evaluated
on the zoo's test images with **no training** (the engine's ``evaluate``), and the overlap of each
predicted pruned set with the VD twin's (IoU over weights).

A predictor's masks are checked before they are scored (shape, biases kept, exact pruned count),
so a user's own predictor is compared at exactly the sparsity the baselines are.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from analysis.hyperrep.zeroshot_eval import mask_agreement
from zoo_dataset.architectures import build_model
from zoo_dataset.data import ImageData
from zoo_dataset.errors import StoreError, ZooSpecError
from zoo_dataset.metrics import evaluate
from zoo_dataset.sparsify.magnitude import prune_count
from zoo_dataset.store import ZooStore

from .predictors import MaskPredictor
from .samples import Samples

DENSE = "dense original"  # the reference row: the held-out originals unpruned
METRICS = ("accuracy", "iou")


class _Networks:
    """One network per (activation, dropout) of the store's models, reloaded for every state."""

    def __init__(self, store: ZooStore, data: ImageData):
        self.store, self.data, self.nets = store, data, {}

    def accuracy(self, model_id: int, flat: np.ndarray) -> float:
        config = self.store.model_config(model_id)
        key = (config.activation, config.dropout)
        if key not in self.nets:
            self.nets[key] = build_model(self.store.spec.architecture, self.data.channels, *key)
        net = self.store.layout.load_into(self.nets[key], flat)
        return evaluate(net, self.data.test_x, self.data.test_y)[1]


def _check_held_out(store: ZooStore, held_out: Samples) -> None:
    if held_out.layout != store.layout:
        raise ZooSpecError(f"the held-out samples have {held_out.layout}; {store.zoo_dir} has {store.layout}")
    if len(np.unique(held_out.model_ids)) != len(held_out):
        raise ZooSpecError("the masks task scores one state per held-out model; the samples repeat a model")
    keep = held_out.extra.get("vd_keep")
    if keep is None or np.shape(keep) != held_out.weights.shape:
        raise StoreError("the held-out samples carry no VD masks (extra['vd_keep']) of their weights' shape")


def _check_masks(keep: np.ndarray, held_out: Samples, sparsity: float, name: str) -> np.ndarray:
    keep = np.asarray(keep)
    if keep.shape != held_out.weights.shape or keep.dtype != bool:
        raise ZooSpecError(f"{name} gave masks of {keep.dtype} {keep.shape}, not bool {held_out.weights.shape}")
    is_weight = held_out.layout.weight_mask()
    if not keep[:, ~is_weight].all():
        raise ZooSpecError(f"{name} pruned biases; masks prune weights only")
    expected = prune_count(sparsity, held_out.layout.num_weights)
    pruned = (~keep[:, is_weight]).sum(axis=1)
    if (pruned != expected).any():
        raise ZooSpecError(f"{name} pruned {sorted(set(pruned.tolist()))} weights at sparsity {sparsity:g}; "
                           f"it must prune exactly {expected}")
    return keep


def mask_table(
    store: ZooStore, predictor: MaskPredictor, held_out: Samples, sparsities: Sequence[float], data: ImageData,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per (held-out model, sparsity): the test accuracy of the masked original, the IoU
    of its pruned weights with its VD twin's, and the model's share of the time the predictor took
    to give the masks (fitting is the caller's)."""
    _check_held_out(store, held_out)
    networks, is_weight = _Networks(store, data), held_out.layout.weight_mask()
    vd_pruned = ~np.asarray(held_out.extra["vd_keep"])[:, is_weight]
    rows = []
    for sparsity in tqdm(sparsities, desc=f"masks: {predictor.name}", disable=not progress):
        start = time.perf_counter()
        keep = predictor.keep(held_out.weights, held_out.layout, float(sparsity))
        seconds = (time.perf_counter() - start) / len(held_out)
        keep = _check_masks(keep, held_out, float(sparsity), predictor.name)
        for i, model_id in enumerate(held_out.model_ids):
            rows.append({
                "predictor": predictor.name, "model_id": int(model_id), "sparsity": float(sparsity),
                "accuracy": networks.accuracy(int(model_id), np.where(keep[i], held_out.weights[i], 0.0)),
                "iou": mask_agreement(~keep[i, is_weight], vd_pruned[i])[0], "seconds": seconds,
            })
    return pd.DataFrame(rows)


def dense_table(store: ZooStore, held_out: Samples, data: ImageData) -> pd.DataFrame:
    """The reference: each held-out original's test accuracy unpruned (no IoU)."""
    _check_held_out(store, held_out)
    networks = _Networks(store, data)
    return pd.DataFrame([
        {"predictor": DENSE, "model_id": int(m), "sparsity": 0.0, "accuracy": networks.accuracy(int(m), w),
         "iou": float("nan"), "seconds": 0.0}
        for m, w in zip(held_out.model_ids, held_out.weights, strict=True)
    ])


def summarise(table: pd.DataFrame) -> list[dict]:
    """Result rows of a per-model table: per (predictor, sparsity, metric) the mean over models,
    their std (ddof 0) and the predictor's total time at that sparsity."""
    rows = []
    for (name, sparsity), group in table.groupby(["predictor", "sparsity"], sort=False):
        for metric in METRICS:
            values = group[metric].dropna()
            if values.empty:
                continue
            rows.append({
                "task": "masks", "population": "original", "target": metric, "predictor": name,
                "metric": metric, "over": "models", "sparsity": float(sparsity), "value": float(values.mean()),
                "std": float(values.std(ddof=0)), "n_models": len(values), "n_states": len(values),
                "seconds": float(group.seconds.sum()),
            })
    return rows


def score_masks(
    store: ZooStore, predictor: MaskPredictor, held_out: Samples, sparsities: Sequence[float], data: ImageData,
) -> list[dict]:
    """Result rows of one fitted predictor: accuracy and IoU at each sparsity, mean over held-out models."""
    return summarise(mask_table(store, predictor, held_out, sparsities, data))


def score_dense(store: ZooStore, held_out: Samples, data: ImageData) -> list[dict]:
    """The reference result row: the held-out originals' mean test accuracy unpruned."""
    return summarise(dense_table(store, held_out, data))
