"""What a twin dataset item holds (the schema, as data), and a collate for mixed batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch.utils.data import default_collate

# key -> what it holds; "state" is one flat [P] vector in the chosen view (ZooTrajectoryDataset:
# stacked over the requested epochs, [E, ...]; by default every recorded one, epoch 0 included).
# Keys marked "(VD)" exist for VD twins only.
ITEM_SCHEMA: dict[str, str] = {
    "model_id": "int64 scalar: the model's id in the zoo",
    "level": "float32 scalar: the twin's sparsity level as a fraction (MP: the pruning level; VD: 0.0)",
    "epoch": "int64 scalar: the twin's epoch (-1 resolved to the last); trajectories: the requested epochs "
    "(default arange(E+1))",
    "original": "state: the original model's final weights (float32)",
    "twin": "state: the twin's weights, pruned entries as exact zeros unless apply_mask=False (float32)",
    "mask": "state: the twin's keep-mask (bool; MP: pruning mask, VD: log_alpha < threshold)",
    "log_alpha": "state (VD): log alpha of every parameter (float32)",
    "original_properties": "dict of float32 scalars of the original's final state: train_loss, train_acc, "
    "test_loss, test_acc, ggap, sparsity, sparsity_<layer>, epoch (no agreement: an original is not "
    "compared with itself, so the key is left out)",
    "twin_properties": "dict of float32 scalars (trajectories: [E]) of the twin's state: the original's "
    "keys plus agreement (share of test samples where twin and original predict the same class)",
    "factors": "dict of the model's generating factors: seed, activation, optimizer, lr, weight_decay, "
    "dropout, init (plain Python values)",
}


# what a ZooOriginalDataset item holds ("state": one flat [P] vector in the chosen view; trajectories:
# stacked over the requested epochs, [E, ...])
ORIGINAL_ITEM_SCHEMA: dict[str, str] = {
    "model_id": ITEM_SCHEMA["model_id"],
    "epoch": "int64 scalar: the state's epoch (-1 resolved to the last); trajectories: the requested epochs",
    "original": "state: the original model's weights at that epoch (float32)",
    "original_properties": "dict of float32 scalars (trajectories: [E]) of the state: train_loss, train_acc, "
    "test_loss, test_acc, ggap, sparsity, sparsity_<layer>, epoch",
    "factors": ITEM_SCHEMA["factors"],
}


def collate_shared(batch: Sequence[Any]) -> Any:
    """``default_collate`` over the keys every item has, at every depth.

    MP and VD items differ in keys (VD adds ``log_alpha`` and may record other properties), which
    makes ``default_collate`` fail on a batch mixing them (e.g. ``ConcatDataset`` of both); this
    collate keeps the keys they share: ``DataLoader(ConcatDataset([mp, vd]), collate_fn=collate_shared)``.
    """
    return default_collate(shared_items(batch))


def shared_items(batch: Sequence[Any]) -> list[Any]:
    """The items of ``batch`` cut to the keys every item has, at every depth (in each item's order)."""
    common = _common(batch)
    return [_restrict(item, common) for item in batch]


def _common(values: Sequence[Any]) -> dict[str, Any] | None:
    """The tree of keys every value has (``None`` where the values are not all mappings)."""
    if not all(isinstance(v, Mapping) for v in values):
        return None
    keys = set(values[0]).intersection(*values[1:])
    return {k: _common([v[k] for v in values]) for k in keys}


def _restrict(item: Any, common: dict[str, Any] | None) -> Any:
    if common is None:
        return item
    return {k: _restrict(item[k], common[k]) for k in item if k in common}
