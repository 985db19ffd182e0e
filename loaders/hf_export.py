"""Export twin pairs as a typed Hugging Face ``DatasetDict`` (train / validation / test), and as parquet.

Weights are fixed-length float32 features (``List(float32, length=P)``, or ``Array2D([E+1, P])``
with every epoch), masks bool, properties float32: the Arrow table is as large as the data, and
``datasets``, the Hub's viewer and Croissant readers see the shapes and types without guessing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo_dataset.store.files import atomic_path
from zoo_dataset.store.tables import SPLITS

from .datasets import ZooTrajectoryDataset, ZooTwinDataset, _ZooDataset
from .twins import FACTORS

if TYPE_CHECKING:
    from datasets import DatasetDict, Features

HUB_SPLITS = {"train": "train", "val": "validation", "test": "test"}  # store split -> Hub split name
FACTOR_TYPES = {"seed": "int64", "lr": "float64", "weight_decay": "float64", "dropout": "float64"}


def to_hf_dataset(
    zoo: str | Path,
    method: str = "mp",
    level: float | None = None,
    epoch: int | None = -1,
    root: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> DatasetDict:
    """One row per (model, twin) in each of ``train``, ``validation``, ``test`` (the store's model split).

    ``epoch`` picks the twin's state (``-1`` = last); ``None`` stores every epoch (``twin`` as
    ``[E+1, P]``, twin properties as ``[E+1]``). Columns: ``model_id``, ``level``, ``epoch``, the
    generating factors, ``original_<property>`` and ``twin_<property>``, and the flat weight
    vectors ``original``, ``twin``, ``mask`` (and ``log_alpha`` for VD). Rows go through the
    ``datasets`` Arrow cache (``cache_dir``, default the ``datasets`` cache), so zoos larger than
    memory export too; ``.with_format("torch")`` gives tensors back.
    """
    from datasets import Dataset, DatasetDict  # deferred: importing datasets is slow, few need it

    if epoch is None:
        pairs: _ZooDataset = ZooTrajectoryDataset(zoo, method=method, level=level, split=None, root=root)
    else:
        pairs = ZooTwinDataset(zoo, method=method, level=level, split=None, epoch=epoch, root=root)
    features = pair_features(pairs)
    split_of = dict(zip(pairs.store.models().model_id, pairs.store.models().split, strict=True))
    parts = {}
    for split in SPLITS:
        rows = [i for i, model_id in enumerate(pairs.item_model_ids) if split_of[model_id] == split]
        parts[HUB_SPLITS[split]] = Dataset.from_generator(
            _rows, gen_kwargs={"pairs": pairs, "rows": rows}, features=features,
            cache_dir=str(cache_dir) if cache_dir else None,
        ) if rows else Dataset.from_dict({name: [] for name in features}, features=features)
    return DatasetDict(parts)


def write_parquet(dataset: DatasetDict, folder: Path | str) -> dict[str, Path]:
    """One parquet file per non-empty split, ``folder/<split>-00000-of-00001.parquet``, features in its
    metadata (a split without rows gets no file: ``datasets`` cannot read a parquet file without rows)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, part in dataset.items():
        if not part.num_rows:
            continue
        paths[split] = folder / f"{split}-00000-of-00001.parquet"
        with atomic_path(paths[split]) as tmp:  # never written through a link
            part.to_parquet(str(tmp))
    return paths


def pair_features(pairs: _ZooDataset) -> Features:
    """The typed schema of :func:`to_hf_dataset`'s rows for one dataset of pairs."""
    from datasets import Array2D, Features, List, Value

    n_params, n_states = pairs.store.layout.num_params, pairs.index.num_states
    every = pairs.trajectory

    def state(dtype: str) -> Any:
        return Array2D((n_states, n_params), dtype) if every else List(Value(dtype), length=n_params)

    columns: dict[str, Any] = {
        "model_id": Value("int64"),
        "level": Value("float32"),
        "epoch": List(Value("int64"), length=n_states) if every else Value("int64"),
        **{f: Value(FACTOR_TYPES.get(f, "string")) for f in FACTORS},
        **{f"original_{p}": Value("float32") for p in pairs.index.property_names["original"]},
        **{f"twin_{p}": List(Value("float32"), length=n_states) if every else Value("float32")
           for p in pairs.index.property_names[pairs.method]},
        "original": List(Value("float32"), length=n_params),
        "twin": state("float32"),
        "mask": state("bool"),
    }
    if "log_alpha" in pairs.store.population(pairs.method).arrays:
        columns["log_alpha"] = state("float32")
    return Features(columns)


def _rows(pairs: _ZooDataset, rows: list[int]) -> Iterator[dict[str, Any]]:
    for i in rows:
        item = pairs[i]
        row: dict[str, Any] = {
            "model_id": int(item["model_id"]),
            "level": float(item["level"]),
            "epoch": item["epoch"].numpy(),
            **item["factors"],
        }
        for side in ("original", "twin"):
            row.update({f"{side}_{k}": v.numpy() for k, v in item[f"{side}_properties"].items()})
        for array in ("original", "twin", "mask", "log_alpha"):
            if array in item:
                row[array] = item[array].numpy()
        yield row
