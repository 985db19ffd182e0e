"""Errors with one clear line each; the CLI prints ``str(error)`` and exits non-zero."""


class ZooError(Exception):
    """Base class for every error the toolkit reports to a user."""


class UnknownZooError(ZooError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ZooSpecError(ZooError, ValueError):
    """A spec or an override of it is invalid (bad factor, sparsity level out of range...)."""


class DataUnavailableError(ZooError, FileNotFoundError):
    """The image data of a zoo is missing; the message names the files and how to get them."""


class DataFormatError(ZooError, ValueError):
    """A dataset file exists but is malformed (bad magic number, truncated, label out of range)."""


class StoreError(ZooError):
    """A store is missing, corrupt, truncated, or does not match the requested build."""


class ChecksumError(StoreError):
    """A shard's sha256 does not match the manifest."""


class WorkerError(ZooError):
    """A training worker process died (killed, out of memory); finished units are kept."""


class ZooTypeError(ZooError, TypeError):
    """An argument has the wrong type (``epoch=5.0``, a slice where an int is expected...)."""
