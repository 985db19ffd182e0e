"""Where stores live on this machine, and how a zoo name or path becomes a store directory.

The cache directory is ``$ZOO_TWINS_CACHE`` if set, else ``zoo-twins/`` inside the Hugging Face
home as ``huggingface_hub`` resolves it (``$HF_HOME``, else ``$XDG_CACHE_HOME/huggingface``, else
``~/.cache/huggingface``), so one setting moves every downloaded artefact of a machine. It is also
the default store root of every command (built and downloaded stores alike): an explicit root
wins, nothing else is looked at.
"""

from __future__ import annotations

import os
from pathlib import Path

from zoo_dataset.errors import StoreError, UnknownZooError
from zoo_dataset.specs import registry
from zoo_dataset.store.manifest import MANIFEST
from zoo_dataset.store.paths import check_zoo_name

CACHE_ENV = "ZOO_TWINS_CACHE"


def cache_dir() -> Path:
    """The directory that holds downloaded stores (read from the environment at call time)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    from huggingface_hub import constants  # its HF_HOME follows the Hub's cache conventions

    return Path(constants.HF_HOME).expanduser() / "zoo-twins"


def store_root(root: str | Path | None = None) -> Path:
    """Where stores live, one rule for every command and the loader: an explicit ``root``, else
    ``$ZOO_TWINS_CACHE``, else ``zoo-twins/`` in the Hugging Face home (see :func:`cache_dir`)."""
    return Path(root).expanduser() if root is not None else cache_dir()


def is_path(zoo: str | Path) -> bool:
    """A store directory rather than a zoo name: a Path, or text with a folder separator or '~'."""
    return isinstance(zoo, Path) or "/" in zoo or os.sep in zoo or zoo.startswith("~")


def zoo_dir(zoo: str | Path, root: str | Path | None = None) -> Path:
    """Directory a zoo lives (or would live) in: a store path as given, else ``<store root>/<zoo>``
    (the only place looked at, never the working directory)."""
    if is_path(zoo):
        return Path(zoo).expanduser()
    return store_root(root) / check_zoo_name(zoo)


def check_known(zoo: str | Path, directory: Path) -> None:
    """Raise one clear line when ``directory`` holds no store: unknown zoo, or known but absent."""
    if (directory / MANIFEST).exists():
        return
    name = str(zoo)
    if not is_path(zoo) and name not in registry():
        raise UnknownZooError(f"unknown zoo {name!r}: neither a registered zoo nor a store directory")
    raise StoreError(
        f"zoo {name!r} is not at {directory}; build it with "
        f"`zoo-build --zoo {name} --root {directory.parent}`, "
        f"fetch it with `zoo-download --zoo {name} --root {directory.parent}` (--source modelzoos for the "
        "published Model Zoos), or pass download=True"
    )
