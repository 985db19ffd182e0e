"""Model splits: the store's fixed train/val/test split by name, and k folds by model.

Every split is by model: one model's epochs, levels and twins are always on one side.
``"validation"`` (the Hugging Face Hub's name) is accepted wherever ``"val"`` is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Subset

from zoo_dataset.errors import StoreError, ZooSpecError, ZooTypeError
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


def models_of_split(store: ZooStore, split: str | None, models: Iterable[int] | None) -> list[int]:
    """Sorted ids of the ``split`` models, or of those listed in ``models``, which must all be in
    the store and in ``split``: a dataset never leaves out a model it was asked for without a word
    (``split=None`` takes models from every split)."""
    ids = split_model_ids(store, split)
    if models is None:
        return ids
    wanted = check_model_ids(models)
    unknown = sorted(wanted - set(split_model_ids(store, None)))
    if unknown:
        raise StoreError(f"models {unknown[:10]} are not in {store.zoo_dir}")
    outside = sorted(wanted - set(ids))
    if outside:
        split = normalize_split(split)
        raise StoreError(
            f"models {outside[:10]} are not in the {split!r} split of {store.zoo_dir} (the split is by model); "
            "pass split=None to take models from every split"
        )
    return sorted(wanted)


def check_model_ids(models: Iterable[int]) -> set[int]:
    """A set of model ids from any iterable of ints (a list, a range, a tensor or array of ids)."""
    if isinstance(models, (str, bytes)) or not isinstance(models, Iterable):
        raise ZooTypeError(f"models must be an iterable of model ids, not type {type(models).__name__}")
    ids = set()
    for m in models:
        value = m.item() if hasattr(m, "item") else m
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ZooTypeError(f"models must hold int model ids, not type {type(value).__name__}")
        ids.add(int(value))
    return ids


def model_folds(model_ids: Iterable[int], k: int = 5, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """``k`` (train models, test models) folds over ``model_ids``, shuffled with ``seed``.

    Each model is in the test side of exactly one fold and never on both sides of a fold, so
    datasets built with ``models=train`` / ``models=test`` never share a model's epochs, levels
    or twins (scikit-learn's ``KFold`` over the sorted ids).
    """
    from sklearn.model_selection import KFold

    if isinstance(k, bool) or not isinstance(k, int):
        raise ZooTypeError(f"k must be an int, not type {type(k).__name__}")
    ids = np.array(sorted(check_model_ids(model_ids)))
    if not 2 <= k <= len(ids):
        raise ZooSpecError(f"k = {k} folds need 2 <= k <= the number of models ({len(ids)})")
    folds = KFold(n_splits=k, shuffle=True, random_state=seed).split(ids)
    return [(ids[train].tolist(), ids[test].tolist()) for train, test in folds]


def item_folds(dataset: Any, k: int = 5, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """``k`` (train item indices, test item indices) folds of a dataset, grouped by model (for
    ``torch.utils.data.Subset``): :func:`model_folds` over its models, mapped to its items.

    ``dataset``: a zoo dataset, or a ``ConcatDataset`` / ``Subset`` of them (e.g. the MP and VD
    twins of one zoo): a model's items in every part are on the same side of a fold."""
    item_models = item_model_ids(dataset)
    out = []
    for _, test in model_folds(set(item_models), k, seed):
        held = set(test)
        out.append(([i for i, m in enumerate(item_models) if m not in held],
                    [i for i, m in enumerate(item_models) if m in held]))
    return out


def item_model_ids(dataset: Any) -> list[int]:
    """The model id of each item of a zoo dataset, or of a ``ConcatDataset`` or ``Subset`` of them."""
    if isinstance(dataset, ConcatDataset):
        return [m for part in dataset.datasets for m in item_model_ids(part)]
    if isinstance(dataset, Subset):
        ids = item_model_ids(dataset.dataset)
        return [ids[i] for i in dataset.indices]
    if not hasattr(dataset, "item_model_ids"):
        raise ZooTypeError(
            f"cannot group the items of a {type(dataset).__name__} by model: pass a zoo dataset, or a "
            "ConcatDataset or Subset of them"
        )
    return dataset.item_model_ids
