"""Where things live inside a zoo directory. One place, so writer and reader never disagree."""

from __future__ import annotations

from pathlib import Path

MODELS_TABLE = "models.parquet"
STAGING = "_staging"
INGEST_RECORD = "ingest.json"  # an ingested zoo: its originals are published models, not trained here
DATA_DIR = "data"  # the card's parquet configs: data/<config>/<split>-00000-of-00001.parquet
CARD_FILE = "README.md"  # the dataset card
CROISSANT_FILE = "croissant.json"  # the card's Croissant description


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
