"""Model splits: the store's fixed train/val/test split by name, and k folds by model.

Every split is by model: one model's epochs, levels and twins are always on one side.
``"validation"`` (the Hugging Face Hub's name) is accepted wherever ``"val"`` is.
"""

from __future__ import annotations

from zoo_dataset.errors import ZooSpecError, ZooTypeError
from zoo_dataset.store import ZooStore
from zoo_dataset.store.tables import SPLITS

SPLIT_ALIASES = {"validation": "val"}


def normalize_split(split: str | None) -> str | None:
    """The stored name of a split (``"validation"`` -> ``"val"``); None stays None (every model)."""
    if split is None:
        return None
    if not isinstance(split, str):
        raise ZooTypeError(f"split must be a str ({', '.join(SPLITS)}) or None, not type {type(split).__name__}")
    split = SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise ZooSpecError(
            f"unknown split {split!r}; choose one of {', '.join(SPLITS)} (or 'validation') or None for all"
        )
    return split


def split_model_ids(store: ZooStore, split: str | None) -> list[int]:
    """Sorted ids of the models in ``split`` (from the models table; None: every model)."""
    split = normalize_split(split)
    models = store.models()
    if split is not None:
        models = models[models.split == split]
    return sorted(int(m) for m in models.model_id)
