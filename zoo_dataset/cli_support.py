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


class _OneLineUsageErrors:
    """Click usage mistakes (a bad option value, a missing argument) as one ``error:`` line too.

    Click's default prints usage, a hint and the message over three lines; the toolkit promises one.
    """

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            command = f"{parent.command_path} {info_name}" if parent else info_name
            click.echo(f"error: {exc.format_message()} (see {command} --help)", err=True)
            sys.exit(2)


class Command(_OneLineUsageErrors, click.Command):
    """A toolkit command: ``@click.command(cls=Command)``."""


class Group(_OneLineUsageErrors, click.Group):
    """A toolkit command group; its subcommands are toolkit commands too."""

    command_class = Command
