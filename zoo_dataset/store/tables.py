"""The models table: one row per model with its generating factors and its fixed split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..specs import ModelConfig, ZooSpec

SPLITS = ("train", "val", "test")
# an ingested model's published epoch 0 equals the init its seed replays here (NA: none published);
# absent from the tables of built stores and of stores ingested before the column existed
INIT_MATCHES_SEED = "init_matches_seed"


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



def configs_from_table(table: pd.DataFrame) -> dict[int, ModelConfig]:
    """The models table's rows as :class:`ModelConfig` by model id: what the store says was trained
    (for an ingested random-seed zoo, the published seeds rather than the spec's draws)."""
    cast = {"model_id": int, "seed": int, "lr": float, "weight_decay": float, "dropout": float}
    return {
        int(row["model_id"]): ModelConfig(**{k: cast.get(k, str)(row[k]) for k in ModelConfig.__dataclass_fields__})
        for row in table.to_dict("records")
    }


def init_check(table: pd.DataFrame) -> str | None:
    """What the models table says of the ingested models' epoch 0 (its published checkpoint and the
    init its seed replays), as one sentence for the report and the card; None for a store without
    the column (built by this toolkit, or ingested before it existed)."""
    if INIT_MATCHES_SEED not in table:
        return None
    flags = table[INIT_MATCHES_SEED].astype("boolean").dropna()  # NA: no checkpoint_000000, epoch 0 replayed
    checked, differ = len(flags), int((~flags).sum())
    if differ:
        text = (f"the published checkpoint_000000 of {differ} of {checked} ingested models is not the init their seed "
                f"replays in this toolkit; they are kept as published ({INIT_MATCHES_SEED} = false in models.parquet)")
    elif checked:
        text = (f"the published checkpoint_000000 of all {checked} ingested models that have one is the init their "
                "seed replays in this toolkit")
    else:
        text = "no ingested model has a published checkpoint_000000"
    unchecked = len(table) - checked
    return text + (f"; for {unchecked} models without one it is that replay" if unchecked else "")
