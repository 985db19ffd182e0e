"""How the toolkit reads and writes HDF5: h5py's failures become the toolkit's errors in one place,
and text attributes are fixed-length strings.

Every open and read of an HDF5 file (a store's shards and staged units, a USPS data file) runs
inside :class:`hdf5_errors`.
A damaged HDF5 file does not fail with one exception type: h5py raises ``OSError`` for a bad chunk
or superblock, ``KeyError`` when a damaged object header hides a dataset, ``RuntimeError`` when a
link or a chunk index fails its checksum, ``ValueError`` or ``TypeError`` for a damaged datatype or
dataspace. Every one of them is a :class:`StoreError` (or the error the caller names) in one line
that names the file; the toolkit's own errors pass through unchanged (``UnknownZooError`` is a
``KeyError`` too).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import numpy as np

from .errors import StoreError, ZooError

# what h5py (and numpy, converting what it read) raise for a damaged file
HDF5_FAILURES = (OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError, SystemError)


class hdf5_errors:  # noqa: N801  (used as a context manager: ``with hdf5_errors(path): ...``)
    """Turn any h5py failure inside the block into ``error`` (default StoreError) naming ``path``
    (``what``: the kind of file; ``fix``: what to do). A class rather than a generator: the loaders
    enter it on every read."""

    __slots__ = ("error", "fix", "path", "what")

    def __init__(self, path: Path | str, what: str = "shard", error: type[ZooError] = StoreError,
                 fix: str = "re-download the store or rebuild it"):
        self.path, self.what, self.error, self.fix = path, what, error, fix

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None or isinstance(exc, ZooError) or not isinstance(exc, HDF5_FAILURES):
            return
        raise self.error(f"{self.what} {self.path} is corrupt or truncated ({describe(exc)}); {self.fix}") from None


def describe(exc: BaseException) -> str:
    """``Type: first line of the message`` (h5py's messages quote themselves and may span lines)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def text_attribute(text: str) -> np.bytes_:
    """A text attribute as a fixed-length ASCII string, stored in the attribute itself. h5py would
    store a ``str`` as a variable-length string in the file's global heap, and one flipped byte of
    a heap entry's size made HDF5 2.0 loop forever reading it (no error, no timeout)."""
    return np.bytes_(text.encode("ascii"))


def read_text(value: object) -> str | None:
    """A text attribute as written by :func:`text_attribute` (bytes) or by older toolkits (a
    variable-length ``str``); None when absent. Anything else is the file's damage."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("ascii")
    raise TypeError(f"a text attribute holds {type(value).__name__}")
