"""Where things live inside a zoo directory. One place, so writer and reader never disagree."""

from __future__ import annotations

from pathlib import Path

MODELS_TABLE = "models.parquet"
STAGING = "_staging"
INGEST_RECORD = "ingest.json"  # an ingested zoo: its originals are published models, not trained here
DATA_DIR = "data"  # the card's parquet configs: data/<config>/<split>-00000-of-00001.parquet
CARD_FILE = "README.md"  # the dataset card
CROISSANT_FILE = "croissant.json"  # the card's Croissant description
BENCH_SPLITS = "bench/splits"  # zoo-bench split files: bench/splits/<split id>.json
BENCH_RESULTS = "bench/results"  # zoo-bench results: bench/results/<run>.json|.md|.png
BENCH_SUFFIXES = {BENCH_SPLITS: (".json",), BENCH_RESULTS: (".json", ".md", ".png")}


def shard_name(population: str, index: int) -> str:
    return f"{population}/shard-{index:05d}.h5"


def states_name(population: str, index: int) -> str:
    return f"{population}/shard-{index:05d}.states.parquet"


def unit_path(zoo_dir: Path, population: str, model_id: int, level: float) -> Path:
    """A finished unit of work (one model, one level) waiting to be packed into its shard."""
    return Path(zoo_dir) / STAGING / population / f"m{model_id:06d}-l{level:.4f}.h5"


def card_data_files(zoo_dir: Path) -> list[str]:
    """The parquet files under the store's ``data/`` (relative paths): what a Croissant reader's
    ``data/<config>/*.parquet`` takes in, whichever the card lists."""
    folder = Path(zoo_dir) / DATA_DIR
    return sorted(p.relative_to(zoo_dir).as_posix() for p in folder.rglob("*.parquet")) if folder.is_dir() else []


def bench_files(zoo_dir: Path) -> list[str]:
    """The benchmark's files in the store (relative paths): split files and results the card lists
    (temporaries of a killed write and other names are not among them)."""
    found = []
    for folder, suffixes in BENCH_SUFFIXES.items():
        path = Path(zoo_dir) / folder
        if path.is_dir():
            found += [p.relative_to(zoo_dir).as_posix() for p in path.iterdir() if p.suffix in suffixes]
    return sorted(found)
