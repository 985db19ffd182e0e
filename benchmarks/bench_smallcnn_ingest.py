"""Time and peak memory of ingesting a Small CNN Zoo-sized folder (the ingest alone, no training).

Writes a synthetic zoo in the format (``--models`` models x 9 checkpoints of 4 970 float32: 30 000
models make a 5.4 GB weights.npy, written memory-mapped a block at a time) into ``--dir``, then runs
``zoo-build --zoo smallcnn_cifar10gs --from-original DIR --stages original`` in a child process and
reports its wall time and peak resident memory. The folder is deleted afterwards unless ``--keep``.

    .venv/bin/python benchmarks/bench_smallcnn_ingest.py --dir /tmp/scz --models 30000
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from releases.smallcnn_format import layout_frame, tf_variables
from zoo_dataset.model_layout import layout_for
from zoo_dataset.specs import get_spec

STEPS = (0, 1, 2, 3, 20, 40, 60, 80, 86)
BLOCK = 1000  # models written at a time


def write_synthetic(folder: Path, n_models: int) -> int:
    """weights.npy, layout.csv, metrics.csv.gz of ``n_models`` random models; returns the bytes of weights.npy."""
    folder.mkdir(parents=True, exist_ok=True)
    variables = tf_variables(layout_for(get_spec("smallcnn_cifar10gs")))
    layout_frame(variables).to_csv(folder / "layout.csv", index=False)
    size = variables[-1].end
    rows = np.lib.format.open_memmap(folder / "weights.npy", mode="w+", dtype=np.float32,
                                     shape=(n_models * len(STEPS), size))
    rng = np.random.default_rng(0)
    for start in range(0, n_models, BLOCK):
        n = min(BLOCK, n_models - start)
        rows[start * len(STEPS) : (start + n) * len(STEPS)] = rng.normal(0, 0.1, (n * len(STEPS), size))
    rows.flush()
    del rows
    models = np.repeat(np.arange(n_models), len(STEPS))
    metrics = pd.DataFrame({
        "config.activation": np.where(models % 2, "tanh", "relu"), "config.b_init": "zeros",
        "config.dataset": "cifar10", "config.dropout": (models % 7) / 10, "config.l2reg": 1e-5,
        "config.learning_rate": 1e-3, "config.optimizer": np.where(models % 3, "adam", "sgd"),
        "config.random_seed": 42, "config.train_fraction": 1.0, "config.w_init": "he_normal",
        "modeldir": [f"/zoo/cifar10/{m:05d}" for m in models], "step": np.tile(STEPS, n_models),
        "test_accuracy": rng.random(len(models)), "test_loss": rng.random(len(models)),
        "train_accuracy": rng.random(len(models)), "train_loss": rng.random(len(models)),
    })
    metrics.to_csv(folder / "metrics.csv.gz", index=False)
    return (folder / "weights.npy").stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="scratch folder (needs ~3x the weights' size)")
    parser.add_argument("--models", type=int, default=30000)
    parser.add_argument("--keep", action="store_true", help="keep the synthetic zoo and the store")
    args = parser.parse_args()
    zoo, root = args.dir / "published", args.dir / "stores"
    start = time.perf_counter()
    size = write_synthetic(zoo, args.models)
    os.sync()  # the timed ingest should not wait for the writeback of the files it reads
    print(f"wrote {args.models} models x {len(STEPS)} checkpoints ({size / 1e9:.2f} GB weights.npy) in "
          f"{time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "builders.cli", "--zoo", "smallcnn_cifar10gs", "--from-original", str(zoo),
                    "--root", str(root), "--stages", "original"], check=True)  # zoo-build
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    store = sum(p.stat().st_size for p in (root / "smallcnn_cifar10gs").rglob("*") if p.is_file())
    print(f"ingest: {seconds:.0f} s ({args.models / seconds:.0f} models/s), peak resident memory {peak:.0f} MiB, "
          f"store {store / 1e9:.2f} GB")
    if not args.keep:
        shutil.rmtree(args.dir)


if __name__ == "__main__":
    main()
