"""What every command-line tool of the toolkit shares: one ``error:`` line per failure, exit codes
2 (usage) and 1 (runtime) as documented in :mod:`zoo_dataset.errors`, ``--version``, and the
validators of options that several tools take (epochs, seeds, finite numbers, paths, device, Hub repo id)."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import click

from . import __version__
from .errors import RUNTIME_EXIT, USAGE_EXIT, ZooError, ZooSpecError
from .specs import MAX_EPOCHS, MAX_SEED, parse_level

EPOCHS = click.IntRange(1, MAX_EPOCHS)  # the specs' bound: --epochs and a spec file's epochs agree
SEED = click.IntRange(0, MAX_SEED)
_TMP_NAME = re.compile(r"\.\d+\.tmp$")  # files.atomic_path's temporary sibling, removed when a write fails
_REASONS = {
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a file is in the way",
}


def _fail(message: str, code: int) -> NoReturn:
    """The one way a tool stops on an error: one ``error: ...`` line on stderr (a message of several
    lines is joined into one), then exit ``code``."""
    line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    click.echo(f"error: {line}", err=True)
    sys.exit(code)


def _usage_line(exc: click.UsageError, command_path: str | None = None) -> str:
    """A click usage error as one line, naming the ``--help`` of the command it concerns (and a
    group's commands, for a missing or unknown one)."""
    ctx = exc.ctx or click.get_current_context(silent=True)
    message = exc.format_message()
    if ctx is not None and isinstance(ctx.command, click.Group):
        message = f"{message} Commands: {', '.join(ctx.command.list_commands(ctx))}."
    if command_path is None and ctx is not None:
        command_path = ctx.command_path
    return f"{message} (see {command_path} --help)" if command_path else message


def describe_os_error(exc: OSError) -> str:
    """One line for a failed file operation: what happened to which path (never a removed temp file)."""
    path = _TMP_NAME.sub("", str(exc.filename)) if exc.filename else None
    text = str(exc)
    if exc.errno == errno.ENOSPC or "No space left on device" in text or "errno = 28" in text:
        where = f" while writing {path}" if path else ""
        return f"disk full{where}; free some space and run the same command again (finished work is kept)"
    reason = _REASONS.get(exc.errno) or exc.strerror or text
    return f"cannot use {path}: {reason}" if path else reason


@contextlib.contextmanager
def one_line_errors(*also: type[Exception]) -> Iterator[None]:
    """Report a toolkit error, a usage error, a failed file operation (or one of ``also``) as one
    ``error: ...`` line on stderr and exit with the code of its kind (usage 2, runtime 1)."""
    try:
        yield
    except ZooError as exc:
        _fail(str(exc), exc.exit_code)
    except click.UsageError as exc:  # raised by the command itself, e.g. a missing option
        _fail(_usage_line(exc), USAGE_EXIT)
    except OSError as exc:
        _fail(describe_os_error(exc), RUNTIME_EXIT)
    except also as exc:
        _fail(str(exc), RUNTIME_EXIT)


def as_bad_parameter(parse: Callable) -> Callable:
    """A click callback from a parser that raises ZooSpecError: the error is a usage error of the option."""
    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is None:
            return None
        try:
            return parse(value)
        except ZooSpecError as exc:
            raise click.BadParameter(str(exc)) from None
    return callback


def check_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A ``--device`` that torch knows and this machine has (no store is created for a typo)."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise click.BadParameter(f"{value!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise click.BadParameter(f"{value!r}: this torch {torch.__version__} sees no CUDA device; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise click.BadParameter(f"{value!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise click.BadParameter(f"{value!r}: MPS is not available on this machine; use cpu")
    elif device.type != "cpu":
        raise click.BadParameter(f"{value!r}: the toolkit trains on cpu, cuda or mps")
    return value


def check_percentage(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """A sparsity given as a fraction (0.8) or a percentage (80), by the specs' one rule (``parse_level``)."""
    try:
        parse_level(value)
    except ZooSpecError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, which lets NaN through (every comparison with it is false), without NaN and inf."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class NonEmptyPath(click.Path):
    """click's Path without the empty path, which pathlib would read as the working directory."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value:
            self.fail("an empty path names no folder; give a path, or leave the option out", param, ctx)
        return super().convert(value, param, ctx)


def check_repo_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A ``--repo-id`` the Hub accepts (``ORG/NAME``), by huggingface_hub's own rule, before any work."""
    if value is None:
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as exc:
        rule = str(exc).split(": '")[0]  # the rule, without the value repeated
        raise click.BadParameter(f"{value!r} is not a Hub repo id such as ORG/NAME: {rule}") from None
    return value


def writable_dir(path: str | Path, option: str) -> Path:
    """``path`` as a folder this process can create or write into; checked before anything is written,
    so a read-only disk or a file in the way is one usage error, not a half-made store."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        problem = "is a file" if existing == path else f"lies under the file {existing}"
        raise click.BadParameter(f"{path} {problem}, not a folder", param_hint=f"'{option}'")
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = os.statvfs(existing).f_flag & os.ST_RDONLY
        why = "is on a read-only file system" if read_only else "is not writable"
        raise click.BadParameter(f"{existing} {why}", param_hint=f"'{option}'")
    return path


def version_option() -> Callable:
    """``--version``: the toolkit's version (every tool shares it)."""
    return click.version_option(__version__, "--version", package_name="zoo-twins",
                                message="%(prog)s (zoo-twins) %(version)s")


class _OneLineUsageErrors:
    """Click usage mistakes (a bad option value, a missing argument, no or an unknown subcommand) as
    one ``error:`` line too.

    Click's default prints usage, a hint and the message over three lines; the toolkit promises one.
    """

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            _fail(_usage_line(exc, f"{parent.command_path} {info_name}" if parent else info_name), USAGE_EXIT)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a group's unknown subcommand is found only here
            _fail(_usage_line(exc), USAGE_EXIT)


class Command(_OneLineUsageErrors, click.Command):
    """A toolkit command: ``@click.command(cls=Command)``."""


class Group(_OneLineUsageErrors, click.Group):
    """A toolkit command group; its subcommands are toolkit commands too. Called without a command
    it is a usage error of one line, not a page of help."""

    command_class = Command

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("no_args_is_help", False)
        super().__init__(*args, **kwargs)
