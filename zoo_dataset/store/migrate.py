"""Convert a schema-1 store to schema 2 in place, losslessly (``zoo-build --migrate``).

Schema 1 stored a shard's ``level`` dataset as [levels]; schema 2 stores it as [models, levels] so
that every dataset is row-aligned. Every other dataset is copied with HDF5's object copy (chunks
and filters as they are, no decompression), each shard is replaced atomically and the manifest
rewritten after each, so a killed migration leaves a readable store and running it again finishes
the job (the temporary a killed run left is removed first). Before a rewritten shard replaces the
old one, its sha256 is recorded in ``.migrate-pending.json``: a rerun accepts a schema-2 shard only
when it matches the manifest or that record, so a shard damaged after (or outside) a migration is
refused, never re-checksummed into the manifest. Like every writer it refuses a store whose folders
link outside it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py

from ..errors import ChecksumError
from ..inputs import parse_json, read_regular
from .files import (
    atomic_path,
    atomic_write_text,
    file_matches,
    regular_size,
    remove_stale_tmp,
    sha256_file,
)
from .lock import writer_lock
from .manifest import SCHEMA_VERSION, Manifest
from .paths import check_writable, inside
from .writer import level_rows, shard_attrs, store_folders


def migrate_store(zoo_dir: Path | str, progress: Callable[[str], None] | None = None) -> int:
    """Bring the store at ``zoo_dir`` to the current schema; returns how many shards were rewritten."""
    zoo_dir = Path(zoo_dir)
    with writer_lock(zoo_dir):
        check_writable(zoo_dir)
        remove_stale_tmp(zoo_dir, store_folders())  # a killed migration's temporary shard
        return _migrate(zoo_dir, Manifest.load(zoo_dir), progress)


PENDING = ".migrate-pending.json"  # {shard file: [sha256, bytes]} of rewritten shards not yet in the manifest
MAX_PENDING_BYTES = 1 << 20


def _migrate(zoo_dir: Path, manifest: Manifest, progress: Callable[[str], None] | None) -> int:
    rewritten, pending = 0, _load_pending(zoo_dir)
    for name, info in manifest.populations.items():
        for shard in info.shards:
            path = inside(zoo_dir, shard.file, "shard")
            if _shard_version(path) != SCHEMA_VERSION:
                if not file_matches(path, shard.sha256, shard.bytes):  # never bless a damaged file
                    raise ChecksumError(f"checksum mismatch for {path}: not migrated; re-download it")
                sha256, size = pending[shard.file] = _rewrite_shard(path, manifest, name, zoo_dir / PENDING,
                                                                    pending, shard.file)
                rewritten += 1
                if progress:
                    progress(shard.file)
            elif file_matches(path, shard.sha256, shard.bytes):
                continue  # migrated and recorded
            else:  # a killed run's rewritten shard, or a damaged one
                sha256, size = pending.get(shard.file, ("", None))
                if not file_matches(path, sha256, size):
                    raise ChecksumError(f"checksum mismatch for {path}: it is neither the manifest's shard nor the "
                                        "one a migration wrote; re-download it")
            shard.sha256, shard.bytes = sha256, size
            manifest.save(zoo_dir)
    manifest.schema_version = SCHEMA_VERSION
    manifest.save(zoo_dir)
    (zoo_dir / PENDING).unlink(missing_ok=True)
    return rewritten


def _load_pending(zoo_dir: Path) -> dict[str, tuple[str, int]]:
    path = zoo_dir / PENDING
    if not path.exists():
        return {}
    data = read_regular(path, MAX_PENDING_BYTES, "migration record", ChecksumError)
    try:
        return {str(k): (str(v[0]), int(v[1])) for k, v in parse_json(data, str(path), ChecksumError).items()}
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        raise ChecksumError(f"{path} is not a migration record ({exc}); re-download the store") from None


def _shard_version(path: Path) -> int:
    regular_size(path)  # a FIFO or device would block h5py's open
    with h5py.File(path, "r") as f:
        return int(f.attrs.get("schema_version", 1))


def _rewrite_shard(path: Path, manifest: Manifest, population: str, record: Path,
                   pending: dict[str, tuple[str, int]], file: str) -> tuple[str, int]:
    """The shard at schema 2, its (sha256, bytes) recorded as pending before it replaces the old one."""
    with atomic_path(path) as tmp:
        with h5py.File(path, "r") as old, h5py.File(tmp, "w") as new:
            new.attrs.update(dict(old.attrs))
            new.attrs.update(shard_attrs(manifest, population))
            for key in old:
                if key != "level":
                    old.copy(old[key], new, name=key)
            new["level"] = level_rows(manifest.populations[population].levels, len(old["model_id"]))
        written = (sha256_file(tmp), tmp.stat().st_size)
        atomic_write_text(record, json.dumps({**pending, file: written}))
    return written
