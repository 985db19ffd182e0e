"""Small file helpers: atomic writes and checksums. A killed process never leaves a half file."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"
# what atomic_path names the temporaries of a store's own files: <store file>.<pid>.tmp
STORE_TMP = re.compile(r"(manifest\.json|models\.parquet|README\.md|croissant\.json|ingest(?:-vd)?\.json"
                       r"|shard-\d{5}\.h5|shard-\d{5}\.states\.parquet|m\d{6}-l\d+\.\d{4}\.h5"
                       r"|[a-z]+-\d{5}-of-\d{5}\.parquet)\.(\d+)\.tmp")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it is fsynced and renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def remove_stale_tmp(zoo_dir: Path, folders: list[str]) -> int:
    """Delete temporaries that killed writes of this store left in its own ``folders`` (relative to
    ``zoo_dir``, glob patterns allowed; "" is the store itself); returns how many were removed.

    Only names :func:`atomic_path` gives a store's files are touched, never this process's own, and
    the caller holds the store's writer lock, so no other live writer can own them. A user's
    ``notes.tmp`` or a file in any other folder stays.
    """
    count = 0
    directories = [d for f in folders for d in (Path(zoo_dir).glob(f) if "*" in f else [Path(zoo_dir) / f])]
    for directory in directories:
        if not directory.is_dir() or directory.is_symlink():
            continue
        for tmp in directory.iterdir():
            match = STORE_TMP.fullmatch(tmp.name)
            if match and int(match.group(2)) != os.getpid() and tmp.is_file() and not tmp.is_symlink():
                tmp.unlink()
                count += 1
    return count
