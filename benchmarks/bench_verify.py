"""Cost of verifying shard checksums on first open (on by default for downloaded stores).

Writes the synthetic MP store of ``bench_loader.py`` and times, in one process: (a) one pass of
``ZooTwinDataset`` over every (model, level) twin with checksums off, (b) the same pass with
``verify_checksums`` on (each shard hashed once, on its first open), (c) the hashing alone. Prints
seconds and the ratios b/a and c/a. Usage: ``python benchmarks/bench_verify.py [--models 60] [--epochs 15]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_loader import write_store

from loaders import ZooTwinDataset
from zoo_dataset.store import ZooStore
from zoo_dataset.store.files import sha256_file


def one_pass(zoo_dir: Path, verify: bool) -> float:
    ds = ZooTwinDataset(zoo_dir, method="mp", split=None)
    ds.store.verify_checksums = verify
    start = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp), args.models, args.epochs)
        files = [store.zoo_dir / s.file for p in ("original", "mp") for s in store.population(p).shards]
        size = sum(f.stat().st_size for f in files)
        plain = one_pass(store.zoo_dir, verify=False)
        verified = one_pass(store.zoo_dir, verify=True)
        start = time.perf_counter()
        for f in files:
            sha256_file(f)
        hashing = time.perf_counter() - start
        models = len(ZooStore(store.zoo_dir).manifest.model_ids)
        print(f"store: {len(files)} shards, {size / 1e6:.0f} MB; {models} models")
        print(f"one pass, checksums off: {plain:.2f} s")
        print(f"one pass, checksums on:  {verified:.2f} s  ({verified / plain:.2f}x)")
        print(f"hashing alone:           {hashing:.2f} s  ({hashing / plain:.2f}x of a pass; "
              f"{size / 1e6 / hashing:.0f} MB/s)")


if __name__ == "__main__":
    main()
