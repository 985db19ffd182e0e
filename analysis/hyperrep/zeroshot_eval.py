"""Zero-shot masks against the store's own sparsified twins, on the test images, with no training.

Per held-out model, at the sparsity the predicted mask reaches: the pruned original (zero-shot),
global magnitude pruning of the same original at exactly that sparsity (no fine-tuning), the
stored MP twin at the closest level after its fine-tuning, the true VD twin at the target epoch,
and how well the predicted pruned set matches the VD twin's (IoU, F1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from zoo_dataset.architectures import INPUT_SIZE, build_model
from zoo_dataset.data import ImageData, load_dataset
from zoo_dataset.errors import StoreError
from zoo_dataset.metrics import evaluate
from zoo_dataset.sparsify.magnitude import global_magnitude_mask
from zoo_dataset.store import ZooStore

from .zeroshot import ZeroShotModel

COLUMNS = {  # column -> what the table calls it
    "zero_shot": "zero-shot (no training)",
    "mp_no_ft": "global MP, no fine-tuning",
    "mp_ft": "MP twin after fine-tuning",
    "vd": "true VD twin",
}


def model_ids(store: ZooStore, splits: tuple[str, ...]) -> list[int]:
    """Models of ``splits`` that have both an original and a VD twin in the store."""
    table = store.models()
    have = {int(m) for s in store.population("vd").shards for m in s.model_ids}
    have &= {int(m) for s in store.population("original").shards for m in s.model_ids}
    return sorted(int(m) for m in table.model_id[table.split.isin(splits)] if int(m) in have)


def pairs(store: ZooStore, ids: list[int], vd_epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, P] originals at their last epoch and [M, P] their VD twins' log-alphas at ``vd_epoch``."""
    originals = np.stack([store.weights("original", m, -1) for m in ids])
    alphas = np.stack([store.array("log_alpha", "vd", m, vd_epoch) for m in ids])
    return torch.from_numpy(originals), torch.from_numpy(alphas)


def test_data(store: ZooStore, data_dir: str | None = None) -> ImageData:
    return load_dataset(store.spec.dataset, INPUT_SIZE[store.spec.architecture], data_dir)


def _accuracy(store: ZooStore, model_id: int, flat: np.ndarray, data: ImageData) -> float:
    config = store.model_config(model_id)
    net = build_model(store.spec.architecture, data.channels, config.activation, config.dropout)
    return evaluate(store.layout.load_into(net, flat), data.test_x, data.test_y)[1]


def _pruned_weights(keep: np.ndarray, is_weight: np.ndarray) -> np.ndarray:
    return ~keep[is_weight]


def mask_agreement(predicted_pruned: np.ndarray, true_pruned: np.ndarray) -> tuple[float, float]:
    """(IoU, F1) of two pruned sets; both empty counts as perfect agreement."""
    both = int(np.sum(predicted_pruned & true_pruned))
    either = int(np.sum(predicted_pruned | true_pruned))
    total = int(predicted_pruned.sum() + true_pruned.sum())
    return (both / either if either else 1.0), (2 * both / total if total else 1.0)


def keep_mask(predicted: torch.Tensor, is_weight: np.ndarray, threshold: float) -> np.ndarray:
    """Flat keep-mask [P] from [n_weights] predicted log-alphas: weights with log_alpha >= t are dropped."""
    keep = np.ones(len(is_weight), dtype=bool)
    keep[is_weight] = predicted.numpy() < threshold
    return keep


def compare(
    store: ZooStore, model: ZeroShotModel, ids: list[int], data: ImageData, threshold: float
) -> pd.DataFrame:
    """One row per model: sparsity and test accuracy of each method, and the mask agreement."""
    if "mp" not in store.populations:
        raise StoreError(f"{store.zoo_dir} has no MP twins; build them with zoo-build --stages mp")
    layout, is_weight = store.layout, store.layout.weight_mask()
    mp_levels = np.asarray(store.population("mp").levels)
    originals, _ = pairs(store, ids, model.vd_epoch)
    predicted = model.predict(originals, layout)
    rows = []
    for i, m in enumerate(ids):
        original = originals[i].numpy()
        keep = keep_mask(predicted[i], is_weight, threshold)
        sparsity = float(1 - keep[is_weight].mean())
        level = float(mp_levels[np.argmin(np.abs(mp_levels - sparsity))])
        vd_keep = store.array("masks", "vd", m, model.vd_epoch)
        vd_flat = np.where(vd_keep, store.weights("vd", m, model.vd_epoch), 0.0)
        mp_flat = np.where(store.array("masks", "mp", m, -1, level), store.weights("mp", m, -1, level), 0.0)
        iou, f1 = mask_agreement(_pruned_weights(keep, is_weight), _pruned_weights(vd_keep, is_weight))
        rows.append({
            "model_id": m,
            "original_acc": _accuracy(store, m, original, data),
            "sparsity": sparsity,
            "zero_shot_acc": _accuracy(store, m, np.where(keep, original, 0.0), data),
            "mp_no_ft_acc": _accuracy(
                store, m, np.where(global_magnitude_mask(original, layout, sparsity), original, 0.0), data
            ),
            "mp_level": level,
            "mp_ft_acc": _accuracy(store, m, mp_flat, data),
            "vd_sparsity": float(layout.global_sparsity(vd_flat)),
            "vd_acc": _accuracy(store, m, vd_flat, data),
            "iou": iou,
            "f1": f1,
        })
    return pd.DataFrame(rows)


def sweep(
    store: ZooStore, model: ZeroShotModel, ids: list[int], data: ImageData, thresholds: list[float]
) -> pd.DataFrame:
    """Mean accuracy over sparsity for the figure: the predicted alphas cut at each threshold, and
    global MP of the same originals at the same per-model sparsities (no training for either)."""
    layout, is_weight = store.layout, store.layout.weight_mask()
    originals, _ = pairs(store, ids, model.vd_epoch)
    predicted = model.predict(originals, layout)
    rows = []
    for t in thresholds:
        for i, m in enumerate(ids):
            original = originals[i].numpy()
            keep = keep_mask(predicted[i], is_weight, t)
            sparsity = float(1 - keep[is_weight].mean())
            mp_keep = global_magnitude_mask(original, layout, sparsity)
            rows.append({"threshold": t, "model_id": m, "sparsity": sparsity,
                         "zero_shot_acc": _accuracy(store, m, np.where(keep, original, 0.0), data),
                         "mp_no_ft_acc": _accuracy(store, m, np.where(mp_keep, original, 0.0), data)})
    return pd.DataFrame(rows).drop(columns="model_id").groupby("threshold", as_index=False).mean()


def summary(table: pd.DataFrame) -> str:
    """The comparison as a markdown table of mean (std) over models, in %; over one model its values
    alone (one model has no spread to report)."""
    one = len(table) == 1

    def cell(column: str) -> str:
        mean = f"{100 * table[column].mean():.1f}"
        return mean if one else f"{mean} ({100 * table[column].std(ddof=0):.1f})"

    lines = [
        "1 held-out model; accuracy on the test images, in %" if one else
        f"{len(table)} held-out models; accuracy on the test images, mean (std) over models, in %",
        "",
        "| method | sparsity | accuracy |",
        "|---|---|---|",
        f"| original (dense) | 0.0 | {cell('original_acc')} |",
        f"| {COLUMNS['zero_shot']} | {cell('sparsity')} | {cell('zero_shot_acc')} |",
        f"| {COLUMNS['mp_no_ft']} | {cell('sparsity')} | {cell('mp_no_ft_acc')} |",
        f"| {COLUMNS['mp_ft']} (closest level) | {cell('mp_level')} | {cell('mp_ft_acc')} |",
        f"| {COLUMNS['vd']} | {cell('vd_sparsity')} | {cell('vd_acc')} |",
        "",
        f"predicted vs true VD pruned weights: IoU {cell('iou')}, F1 {cell('f1')}",
    ]
    return "\n".join(lines)


def per_model(table: pd.DataFrame) -> str:
    """The comparison model by model, as a markdown table in %."""
    lines = [
        "| model | sparsity | zero-shot | global MP, no fine-tuning | MP twin (level) after fine-tuning "
        "| VD twin (sparsity) | IoU | F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        cells = [f"{100 * v:.1f}" for v in (r.sparsity, r.zero_shot_acc, r.mp_no_ft_acc)]
        cells += [f"{100 * r.mp_ft_acc:.1f} ({100 * r.mp_level:.0f})",
                  f"{100 * r.vd_acc:.1f} ({100 * r.vd_sparsity:.1f})"]
        cells += [f"{100 * r.iou:.1f}", f"{100 * r.f1:.1f}"]
        lines.append(f"| {r.model_id} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
