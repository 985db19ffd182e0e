"""Errors with one clear line each; the CLI prints ``str(error)`` and exits with ``exit_code``.

Exit codes (the same for every command): 2 for a usage error (a bad option value or combination,
an unknown zoo: the command line must change), 1 for a runtime error (missing or corrupt store or
data, disk full, network: the command may succeed once the cause is fixed).
"""

USAGE_EXIT = 2
RUNTIME_EXIT = 1


class ZooError(Exception):
    """Base class for every error the toolkit reports to a user."""

    exit_code = RUNTIME_EXIT


class UnknownZooError(ZooError, KeyError):
    exit_code = USAGE_EXIT

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ZooSpecError(ZooError, ValueError):
    """A spec or an override of it is invalid (bad factor, sparsity level out of range...)."""

    exit_code = USAGE_EXIT


class DataUnavailableError(ZooError, FileNotFoundError):
    """The image data of a zoo is missing; the message names the files and how to get them."""


class DataFormatError(ZooError, ValueError):
    """A dataset file exists but is malformed (bad magic number, truncated, label out of range)."""


class StoreError(ZooError):
    """A store is missing, corrupt, truncated, or does not match the requested build."""


class StoreUsageError(StoreError):
    """A store or a source that the command line does not fit (a build that needs --resume, other
    settings, a population the source does not publish): a usage error, as the command must change."""

    exit_code = USAGE_EXIT


class ZooNameError(StoreError):
    """A zoo name that is not a plain folder name ('', '..', a path): a usage error."""

    exit_code = USAGE_EXIT


class ChecksumError(StoreError):
    """A shard's sha256 does not match the manifest."""


class WorkerError(ZooError):
    """A training worker process died (killed, out of memory); finished units are kept."""


class ZooTypeError(ZooError, TypeError):
    """An argument has the wrong type (``epoch=5.0``, a slice where an int is expected...)."""

    exit_code = USAGE_EXIT
