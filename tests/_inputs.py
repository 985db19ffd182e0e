"""Input files that are not regular files: a FIFO (a read blocks until a writer comes) and
/dev/zero (a read never ends), and a guard that turns a hang on one into a test failure."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

SPECIAL = ("fifo", "/dev/zero")


def special_file(path: Path, kind: str) -> Path:
    """``path`` made a FIFO (``kind`` "fifo") or a link to ``kind`` (a device such as /dev/zero)."""
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(kind)
    return path


@contextlib.contextmanager
def hang_guard(seconds: int = 60) -> Iterator[None]:
    """Turn a hang into a failure (old code read /dev/zero or waited on a FIFO forever); not a timing assertion."""
    def expire(*_):
        raise TimeoutError(f"still reading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
