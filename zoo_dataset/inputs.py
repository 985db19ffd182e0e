"""Reading what users, archives and servers hand the toolkit: files and JSON text.

Two rules, each kept here once. A file a user names (a spec, a checkpoint, standardisation
statistics, a mirror index...) is read only if it is a regular file, and never past a size bound:
a FIFO would block the read forever and ``/dev/zero`` would fill memory (the file is opened
non-blocking, then checked on the open descriptor, so what is checked is what is read). JSON text
is parsed by :func:`parse_json`, which turns every way ``json`` fails (not text, not JSON, nested
deeper than the parser recurses, an integer of more digits than Python converts) into one line.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import StoreError, ZooError


def open_regular(path: Path, error: type[ZooError] = StoreError, follow: bool = True) -> BinaryIO:
    """``path`` opened for reading if it is (or, with ``follow``, links to) a regular file; ``error``
    for a FIFO, a device or a folder, which would block or never end (opened non-blocking, then
    checked). Without ``follow`` a link is refused by the open itself (OSError)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise error(f"{path} is not a regular file (a device, FIFO or folder); refusing it")
    return os.fdopen(fd, "rb")


def read_regular(path: Path, limit: int, what: str = "file", error: type[ZooError] = StoreError,
                 follow: bool = True) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (:func:`open_regular`); a longer one
    is ``error``, read no further than ``limit + 1`` bytes. OSError (missing, unreadable) passes."""
    with open_regular(path, error, follow) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise error(f"{path} is larger than {_size(limit)}: not a {what}; refusing it")
    return data


def parse_json(data: bytes | str, what: str, error: type[ZooError] = StoreError) -> object:
    """``json.loads(data)``; every failure is ``error`` on one line: ``<what>: not JSON text (<why>)``."""
    try:
        return json.loads(data)
    except RecursionError:
        raise error(f"{what}: not JSON this toolkit reads (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer beyond 4300 digits
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise error(f"{what}: not JSON text ({reason})") from None


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"
