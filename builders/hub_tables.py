"""The parquet files a dataset card's configs point at: every table and the weights, split by model.

The store's own files keep every model of a shard together, whatever its split; the Hub (its
``datasets`` loader, its viewer, Croissant readers) wants one file set per split. So the card stage
writes, under ``data/<config>/<split>-00000-of-00001.parquet`` (split: train, validation, test):

* ``models``: the models table;
* ``states_<population>``: one row per recorded state, with the model's ``split``;
* ``pairs_<method>``: the typed export of :func:`loaders.hf_export.to_hf_dataset` at the last
  epoch: the original's and the twin's flat float32 weights, mask (and log-alpha), properties.

Every file carries its ``datasets`` features in its parquet metadata.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from loaders.hf_export import HUB_SPLITS, to_hf_dataset
from zoo_dataset.methods import twin_methods
from zoo_dataset.store import ZooStore
from zoo_dataset.store.files import atomic_path
from zoo_dataset.store.layout_on_disk import DATA_DIR, card_data_files
from zoo_dataset.store.paths import check_writable

if TYPE_CHECKING:
    from datasets import Dataset, Features



@dataclass(frozen=True)
class HubConfig:
    """One config of the card: its parquet file per split, features and row counts."""

    name: str
    description: str
    files: dict[str, str]  # Hub split -> path relative to the zoo directory
    rows: dict[str, int]
    features: Features

    @property
    def folder(self) -> str:
        return f"{DATA_DIR}/{self.name}"


def write_hub_tables(store: ZooStore) -> list[HubConfig]:
    """Write every config's parquet files into the store and remove the parquet files of ``data/``
    that no config lists now (an earlier card's), so that every file there is one the card offers and
    the manifest vouches for; returns the configs, models first. A store whose ``data/`` (or any
    folder) links outside it is refused before anything is written."""
    check_writable(store.zoo_dir)
    with _no_datasets_progress():
        configs = _write_all(store)
    written = {path for c in configs for path in c.files.values()}
    for stale in set(card_data_files(store.zoo_dir)) - written:
        (store.zoo_dir / stale).unlink()
    return configs


@contextlib.contextmanager
def _no_datasets_progress() -> Iterator[None]:
    """``datasets`` draws a bar per table it makes: noise inside a build's own progress."""
    from datasets.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def _write_all(store: ZooStore) -> list[HubConfig]:
    from datasets import Dataset

    split_of = store.models().set_index("model_id").split
    tables = {"models": ("one row per model: generating factors and split", store.models())}
    for population in store.populations:
        states = store.states(population).drop(columns=["shard", "row"], errors="ignore")
        states["split"] = states.model_id.map(split_of)
        tables[f"states_{population}"] = (f"one row per recorded state of the {population} population", states)
    configs = []
    for name, (description, table) in tables.items():
        features = Dataset.from_pandas(table, preserve_index=False).features  # one schema, even for an empty split
        configs.append(_write(store, name, description, {
            hub: Dataset.from_pandas(table[table.split == split].reset_index(drop=True), features=features,
                                     preserve_index=False)
            for split, hub in HUB_SPLITS.items()
        }))
    for method in (m.name for m in twin_methods() if m.name in store.populations):
        with tempfile.TemporaryDirectory() as cache:
            pairs = to_hf_dataset(store.zoo_dir, method=method, epoch=-1, cache_dir=cache)
            configs.append(_write(store, f"pairs_{method}", (
                f"one row per (model, {method} twin) at the last epoch: original and twin weights (flat float32), "
                "mask, properties"), dict(pairs)))
    return configs


def _write(store: ZooStore, name: str, description: str, parts: dict[str, Dataset]) -> HubConfig:
    """Write the non-empty splits (``datasets`` cannot read a parquet file without rows)."""
    files, rows = {}, {}
    for split, part in parts.items():
        if not part.num_rows:
            continue
        relative = f"{DATA_DIR}/{name}/{split}-00000-of-00001.parquet"
        with atomic_path(store.zoo_dir / relative) as tmp:
            pq.write_table(part.flatten_indices().data.table, tmp)  # the features travel in its metadata
        files[split], rows[split] = relative, part.num_rows
    features = next(iter(parts.values())).features
    return HubConfig(name, description, files, rows, features)


