"""Size and time of the typed Hugging Face export (``to_hf_dataset`` + ``write_parquet``) of a store.

For each method and for the last epoch and every epoch: seconds to build the ``DatasetDict``, its
Arrow size, the parquet size, against the size of the method's HDF5 shards. Usage:
``python benchmarks/bench_export.py --zoo digits_seed --root stores`` (a built store, e.g. ``make demo``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from datasets.utils import logging

from loaders import open_store
from loaders.hf_export import to_hf_dataset, write_parquet


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", default="digits_seed")
    parser.add_argument("--root", default="stores")
    args = parser.parse_args()
    logging.disable_progress_bar()
    store = open_store(args.zoo, args.root)
    print(f"{store.zoo_dir}: {len(store.manifest.model_ids)} models, {store.layout.num_params} parameters")
    for method in (p for p in store.populations if p != "original"):
        shards = sum(s.bytes for s in store.population(method).shards)
        for epoch in (-1, None):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                table = to_hf_dataset(store.zoo_dir, method=method, epoch=epoch, cache_dir=Path(tmp) / "cache")
                seconds = time.perf_counter() - start
                files = write_parquet(table, Path(tmp) / "parquet")
                arrow = sum(part.data.nbytes for part in table.values())
                parquet = sum(p.stat().st_size for p in files.values())
            rows = sum(part.num_rows for part in table.values())
            print(f"{method} epoch={'all' if epoch is None else epoch:>3}: {rows} rows in {seconds:5.1f} s, "
                  f"Arrow {arrow / 1e6:6.2f} MB, parquet {parquet / 1e6:6.2f} MB "
                  f"(the {method} HDF5 shards, every epoch: {shards / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
