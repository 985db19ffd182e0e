"""What every command-line tool of the toolkit shares: errors as one line and exit code 2."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import click

from .errors import ZooError


@contextlib.contextmanager
def one_line_errors(*also: type[Exception]) -> Iterator[None]:
    """Print a toolkit error (or one of ``also``) as ``error: ...`` on stderr and exit with code 2."""
    try:
        yield
    except (ZooError, *also) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
