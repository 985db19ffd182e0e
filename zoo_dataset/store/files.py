"""Small file helpers: atomic writes and checksums. A killed process never leaves a half file."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import ChecksumError, StoreError
from ..inputs import open_regular

TMP_SUFFIX = ".tmp"
MAX_UNDECLARED_BYTES = 1 << 30  # files whose size a manifest does not state (tables of older stores)
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


def regular_size(path: Path) -> int:
    """The size of a regular file (links followed); StoreError for anything else."""
    with open_regular(path) as fh:
        return os.fstat(fh.fileno()).st_size


def sha256_file(path: Path, limit: int | None = None, chunk: int = 1 << 20) -> str:
    """sha256 of a regular file, reading at most ``limit + 1`` bytes when ``limit`` is given (so
    a file longer than ``limit`` never matches a digest of ``limit`` bytes)."""
    digest, left = hashlib.sha256(), None if limit is None else limit + 1
    with open_regular(path) as fh:
        while block := fh.read(chunk if left is None else min(chunk, left)):
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest.hexdigest()


def _mismatch(path: Path) -> ChecksumError:
    return ChecksumError(f"checksum mismatch for {path}: the file was changed or damaged; re-download or rebuild it")


def check_file(path: Path, sha256: str, size: int | None) -> None:
    """``path`` must be a regular file of ``size`` bytes (when known) with this sha256; else
    ChecksumError (StoreError: not a regular file; FileNotFoundError: missing). Reads no further
    than ``size``, and not at all when the size already differs."""
    if size is not None and regular_size(path) != size:
        raise _mismatch(path)
    if sha256_file(path, size if size is not None else MAX_UNDECLARED_BYTES) != sha256:
        raise _mismatch(path)


def file_matches(path: Path, sha256: str, size: int | None = None) -> bool:
    """Whether :func:`check_file` passes (a missing or non-regular file does not)."""
    try:
        check_file(path, sha256, size)
    except (FileNotFoundError, StoreError):
        return False
    return True


def read_checked(path: Path, sha256: str, size: int | None) -> bytes:
    """The contents of a small file, read once and checked as :func:`check_file` does (the bytes
    checked are the bytes returned)."""
    limit = size if size is not None else MAX_UNDECLARED_BYTES
    with open_regular(path) as fh:
        data = fh.read(limit + 1)
    if (size is not None and len(data) != size) or hashlib.sha256(data).hexdigest() != sha256:
        raise _mismatch(path)
    return data


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
