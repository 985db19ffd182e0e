"""One writer per store: an exclusive lock file next to the zoo folder.

Build, ingest, download and publish take ``<root>/.<zoo>.lock`` before they change anything. The
lock is an OS lock (``flock``) on that file, so it dies with its owner: a lock file left by a
killed process (its pid gone) is stale and simply taken over. The file records the owner's pid,
host and command, so a second writer is refused with one line naming the first. The lock lives
beside the folder, not in it, because a download swaps the whole folder. The lock file is never
opened through a link, and a store folder that is a link is refused (either would lead the writer
outside the root).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import StoreError
from ..inputs import parse_json, read_regular
from .files import open_no_follow
from .paths import check_not_linked

LOCK_RECORD_LIMIT = 4096  # an owner record is ~150 bytes
_held: dict[Path, int] = {}  # lock files this process holds -> nesting depth


def lock_path(zoo_dir: Path) -> Path:
    """The lock of the folder ``zoo_dir`` really is (links resolved): two paths to one store, e.g.
    through a linked root, share one lock."""
    zoo_dir = Path(zoo_dir).resolve()
    return zoo_dir.with_name(f".{zoo_dir.name}.lock")


def _owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200]}


def _describe(path: Path) -> str:
    """The lock owner's record, read as untrusted input: a small regular file, never through a link."""
    try:
        owner = parse_json(read_regular(path, LOCK_RECORD_LIMIT, "lock record", follow=False), "lock record")
        return (f"pid {owner['pid']} on {owner['host']} (since {owner['since']}: {owner['command']})")
    except (OSError, StoreError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def writer_lock(zoo_dir: Path) -> Iterator[Path]:
    """Hold the store's writer lock for the block; raises StoreError at once if another writer has it."""
    path = lock_path(zoo_dir)
    if path in _held:  # nested use within one process (e.g. a build that ingests first)
        _held[path] += 1
        try:
            yield path
        finally:
            _held[path] -= 1
        return
    check_not_linked(zoo_dir)  # a linked store folder would take the lock, and the writes, elsewhere
    created = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = open_no_follow(path, os.O_RDWR | os.O_CREAT)  # a link at the lock's name is refused
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"{zoo_dir} is being written by {_describe(path)}; wait for it to finish "
                             f"(its lock: {path})") from None
        try:  # the previous owner may have removed the file between our open and our lock: retry
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_owner()).encode())
        _held[path] = 1
        yield path
    finally:
        _held.pop(path, None)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still locked: a waiting opener then sees another inode and retries
        os.close(fd)
        if created:  # a refused first write leaves no empty root folder behind
            with contextlib.suppress(OSError):
                path.parent.rmdir()
