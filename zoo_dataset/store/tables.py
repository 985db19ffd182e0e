"""The models table: one row per model with its generating factors and its fixed split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..specs import ZooSpec

SPLITS = ("train", "val", "test")


def model_splits(spec: ZooSpec) -> dict[int, str]:
    """Split of every model of the full zoo, fixed by ``spec.split_seed``.

    Splits are by model and computed over the whole zoo, so a model lands in the same split in
    every build (subset or not) and in every population: an original and its twins never cross.
    """
    n = spec.size
    order = np.random.default_rng(spec.split_seed).permutation(n)
    n_train = int(round(spec.model_split[0] * n))
    n_val = int(round(spec.model_split[1] * n))
    split = np.empty(n, dtype=object)
    split[order[:n_train]] = "train"
    split[order[n_train : n_train + n_val]] = "val"
    split[order[n_train + n_val :]] = "test"
    return {i: str(split[i]) for i in range(n)}


def models_table(spec: ZooSpec) -> pd.DataFrame:
    splits = model_splits(spec)
    rows = [{**m.to_dict(), "split": splits[m.model_id]} for m in spec.models()]
    return pd.DataFrame(rows)
