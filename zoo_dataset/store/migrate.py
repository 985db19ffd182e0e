"""Convert a schema-1 store to schema 2 in place, losslessly (``zoo-build --migrate``).

Schema 1 stored a shard's ``level`` dataset as [levels]; schema 2 stores it as [models, levels] so
that every dataset is row-aligned. Every other dataset is copied with HDF5's object copy (chunks
and filters as they are, no decompression), each shard is replaced atomically and the manifest
rewritten after each, so a killed migration leaves a readable store and running it again finishes
the job (a shard already at schema 2 is only re-checksummed; the temporary a killed run left is
removed first). Like every writer it refuses a store whose folders link outside it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py

from ..errors import ChecksumError
from .files import atomic_path, file_matches, regular_size, remove_stale_tmp, sha256_file
from .lock import writer_lock
from .manifest import SCHEMA_VERSION, Manifest, ShardInfo
from .paths import check_writable, inside
from .writer import level_rows, shard_attrs, store_folders


def migrate_store(zoo_dir: Path | str, progress: Callable[[str], None] | None = None) -> int:
    """Bring the store at ``zoo_dir`` to the current schema; returns how many shards were rewritten."""
    zoo_dir = Path(zoo_dir)
    with writer_lock(zoo_dir):
        check_writable(zoo_dir)
        remove_stale_tmp(zoo_dir, store_folders())  # a killed migration's temporary shard
        return _migrate(zoo_dir, Manifest.load(zoo_dir), progress)


def _migrate(zoo_dir: Path, manifest: Manifest, progress: Callable[[str], None] | None) -> int:
    rewritten = 0
    for name, info in manifest.populations.items():
        for shard in info.shards:
            path = inside(zoo_dir, shard.file, "shard")
            if _shard_version(path) != SCHEMA_VERSION:
                if not file_matches(path, shard.sha256, shard.bytes):  # never bless a damaged file
                    raise ChecksumError(f"checksum mismatch for {path}: not migrated; re-download it")
                _rewrite_shard(path, manifest, name)
                rewritten += 1
                if progress:
                    progress(shard.file)
            _rechecksum(zoo_dir, shard)
            manifest.save(zoo_dir)
    manifest.schema_version = SCHEMA_VERSION
    manifest.save(zoo_dir)
    return rewritten


def _shard_version(path: Path) -> int:
    regular_size(path)  # a FIFO or device would block h5py's open
    with h5py.File(path, "r") as f:
        return int(f.attrs.get("schema_version", 1))


def _rewrite_shard(path: Path, manifest: Manifest, population: str) -> None:
    with atomic_path(path) as tmp, h5py.File(path, "r") as old, h5py.File(tmp, "w") as new:
        new.attrs.update(dict(old.attrs))
        new.attrs.update(shard_attrs(manifest, population))
        for key in old:
            if key != "level":
                old.copy(old[key], new, name=key)
        new["level"] = level_rows(manifest.populations[population].levels, len(old["model_id"]))


def _rechecksum(zoo_dir: Path, shard: ShardInfo) -> None:
    path = zoo_dir / shard.file
    shard.sha256, shard.bytes = sha256_file(path), path.stat().st_size
