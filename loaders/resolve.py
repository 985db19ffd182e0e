"""Open a store by zoo name or path, downloading it (or its missing populations) first when asked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zoo_dataset.errors import StoreError, ZooTypeError
from zoo_dataset.store import ZooStore
from zoo_dataset.store.manifest import MANIFEST, Manifest

from .cache import check_known, is_path, zoo_dir


def open_store(
    zoo: str | Path,
    root: str | Path | None = None,
    download: bool = False,
    populations: Sequence[str] | None = None,
    source: str | None = None,
    revision: str | None = None,
) -> ZooStore:
    """A reader over ``zoo`` (a name under the store root, or a store path).

    ``download=True`` fetches a missing store, or the ``populations`` a present store lacks, from
    ``source`` (default ``$ZOO_TWINS_SOURCE``, else the Hub; see :func:`loaders.sources.source_origin`)
    at ``revision``; a store that holds what is asked is used as is, so this works offline. A store
    found by name must say in its manifest that it is that zoo.
    """
    check_bool("download", download)
    directory = zoo_dir(zoo, root)
    if download and _lacks(directory, populations):
        from .download import download_zoo  # deferred: network code only when needed

        directory = download_zoo(str(zoo), source, root=root, populations=populations, revision=revision)
    check_known(zoo, directory)
    store = ZooStore(directory)
    if not is_path(zoo) and store.manifest.zoo != zoo:
        raise StoreError(f"{directory} holds zoo {store.manifest.zoo!r}, not {zoo!r}; refusing it")
    return store


def _lacks(directory: Path, populations: Sequence[str] | None) -> bool:
    if not (directory / MANIFEST).exists():
        return True
    present = {n for n, p in Manifest.load(directory).populations.items() if p.status == "complete"}
    return bool(set(populations or ()) - present)


def check_bool(name: str, value: object) -> None:
    """Refuse a flag that is not a bool: ``download="no"`` is truthy and would download."""
    if not isinstance(value, (bool, np.bool_)):
        raise ZooTypeError(f"{name} must be True or False, not {value!r} (type {type(value).__name__})")
