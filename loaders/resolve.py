"""Open a store by zoo name or path, downloading it first when asked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from zoo_dataset.errors import StoreError
from zoo_dataset.store import ZooStore
from zoo_dataset.store.manifest import MANIFEST

from .cache import check_known, is_path, zoo_dir


def open_store(
    zoo: str | Path,
    root: str | Path | None = None,
    download: bool = False,
    populations: Sequence[str] | None = None,
) -> ZooStore:
    """A reader over ``zoo`` (a name under ``root`` or the cache dir, or a store path).

    ``download=True`` fetches a missing store from the Hugging Face Hub (``populations`` limits
    which shards are fetched); a store already present is used as is, so this works offline.
    A store found by name must say in its manifest that it is that zoo.
    """
    directory = zoo_dir(zoo, root)
    if download and not (directory / MANIFEST).exists():
        from .download import download_zoo  # deferred: network code only when needed

        directory = download_zoo(str(zoo), root=root, populations=populations)
    check_known(zoo, directory)
    store = ZooStore(directory)
    if not is_path(zoo) and store.manifest.zoo != zoo:
        raise StoreError(f"{directory} holds zoo {store.manifest.zoo!r}, not {zoo!r}; refusing it")
    return store
