"""Fetch a published store into the cache: from the Hugging Face Hub, an HTTP mirror, a local copy,
or the published Model Zoos on Zenodo (``modelzoos``, converted by :mod:`loaders.modelzoos`).

Every shard and states table is checked against the sha256 in the store's manifest before it is
kept; a file that fails is deleted and reported. The manifest is written last, so an interrupted
download never looks like a store, and running the same download again resumes it: files already
verified are kept, and an HTTP transfer continues from its ``.part`` file with a Range request.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.error import HTTPError, URLError
from urllib.parse import quote
from urllib.request import Request, urlopen

import pandas as pd
from tqdm.auto import tqdm

from zoo_dataset.errors import ChecksumError, StoreError, ZooSpecError
from zoo_dataset.store.files import sha256_file
from zoo_dataset.store.layout_on_disk import MODELS_TABLE
from zoo_dataset.store.manifest import MANIFEST, Manifest

from .cache import store_root
from .sources import SOURCE_MODELZOOS, check_origin, source_origin
from .sources import default_repo_id as default_repo_id  # re-exported: older imports name this module

CARD = "README.md"
PART = ".part"
RETRIES = 4
CHUNK = 1 << 20


class Fetcher(Protocol):
    """Puts one file of the published store (path relative to the zoo directory) at ``dest``."""

    def fetch(self, relative: str, dest: Path) -> None: ...


def download_zoo(
    zoo: str,
    source: str | None = None,
    *,
    repo_id: str | None = None,
    url: str | None = None,
    root: str | Path | None = None,
    populations: tuple[str, ...] | list[str] | None = None,
    revision: str | None = None,
    files: dict[str, str] | None = None,
    progress: bool = True,
) -> Path:
    """Fetch ``zoo`` into ``<root>/<zoo>`` (root: :func:`~loaders.cache.store_root`) and return that directory.

    ``source`` (default ``$ZOO_TWINS_SOURCE``, else ``hub``): see :func:`loaders.sources.source_origin`. Hub
    downloads are pinned by ``revision`` (branch, tag or commit). ``populations`` limits what is
    fetched; populations missing from a store of the same origin are added to it. ``files`` names
    the Zenodo zip per population where a record holds several (modelzoos only).
    """
    target = store_root(root) / zoo
    origin = source_origin(zoo, source, repo_id, url, revision)
    local = _local_store(Path(origin["location"]), zoo) if origin["source"] == "local" else None
    if local is not None and local.resolve() == target.resolve():
        raise ZooSpecError(f"--source {source} is the download's own target {target}; choose another --root")
    check_origin(target, origin)
    if origin["source"] == SOURCE_MODELZOOS:
        from .modelzoos import fetch_modelzoos  # deferred: conversion code only when needed

        return fetch_modelzoos(zoo, store_root(root), populations, files, progress)
    if origin["source"] == "hub":
        fetcher: Fetcher = HubFetcher(origin["location"], revision, populations)
    elif origin["source"] == "mirror":
        fetcher = HttpFetcher(f"{origin['location']}/{quote(zoo)}", progress)
    else:
        fetcher = LocalFetcher(local)
    return install(fetcher, target, populations, origin)


def install(fetcher: Fetcher, target: Path, populations: tuple[str, ...] | list[str] | None = None,
            origin: dict | None = None) -> Path:
    """Fetch, verify and place the files of the selected populations; the manifest goes last."""
    target.mkdir(parents=True, exist_ok=True)
    manifest = _remote_manifest(fetcher, target)
    upstream = manifest.origin
    manifest.origin = {**(origin or {"source": str(fetcher)}), **({"upstream": upstream} if upstream else {})}
    published = [name for name, info in manifest.populations.items() if info.shards]
    wanted = list(populations) if populations else published
    missing = [p for p in wanted if p not in published]
    if missing:
        raise StoreError(
            f"the published {manifest.zoo} has no {', '.join(missing)} population "
            f"(it has: {', '.join(published)})"
        )
    for name in wanted:
        for shard in manifest.populations[name].shards:
            _fetch_verified(fetcher, target, shard.file, shard.sha256)
            _fetch_verified(fetcher, target, shard.states_file, shard.states_sha256)
    _fetch_models_table(fetcher, target, manifest)
    with contextlib.suppress(FileNotFoundError):  # the card is documentation; a store without one loads
        fetcher.fetch(CARD, target / CARD)
    keep = set(wanted) | _present_populations(target)
    manifest.populations = {n: p for n, p in manifest.populations.items() if n in keep}
    manifest.save(target)
    return target


def _remote_manifest(fetcher: Fetcher, target: Path) -> Manifest:
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        try:
            fetcher.fetch(MANIFEST, Path(tmp) / MANIFEST)
        except FileNotFoundError:
            raise StoreError(f"{fetcher} has no {MANIFEST}: is the zoo published there?") from None
        try:
            return Manifest.load(Path(tmp))
        except StoreError as exc:  # name the source, not the temporary folder that is about to go
            raise StoreError(str(exc).replace(str(Path(tmp) / MANIFEST), f"{MANIFEST} of {fetcher}")) from None


def _fetch_verified(fetcher: Fetcher, target: Path, relative: str, sha256: str) -> None:
    dest = target / relative
    if dest.exists() and sha256_file(dest) == sha256:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART)
    try:
        fetcher.fetch(relative, part)
    except FileNotFoundError:
        raise StoreError(f"{fetcher} lacks {relative}, which its manifest lists") from None
    got = sha256_file(part)
    if got != sha256:
        part.unlink()
        raise ChecksumError(
            f"{relative} from {fetcher} is corrupt (sha256 {got[:12]}..., manifest says "
            f"{sha256[:12]}...); it was discarded, fetch again or report the broken source"
        )
    os.replace(part, dest)


def _fetch_models_table(fetcher: Fetcher, target: Path, manifest: Manifest) -> None:
    """The models table has no manifest checksum; it must parse and list every model of the manifest."""
    dest = target / MODELS_TABLE
    part = dest.with_name(dest.name + PART)
    fetcher.fetch(MODELS_TABLE, part)
    try:
        ids = set(pd.read_parquet(part).model_id.astype(int))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        part.unlink()
        raise ChecksumError(
            f"{MODELS_TABLE} from {fetcher} is unreadable ({type(exc).__name__}); discarded"
        ) from None
    if not set(manifest.model_ids) <= ids:
        part.unlink()
        raise ChecksumError(f"{MODELS_TABLE} from {fetcher} does not list the manifest's models; discarded")
    os.replace(part, dest)


def _present_populations(target: Path) -> set[str]:
    """Populations a previous download already placed (kept when another population is added)."""
    if not (target / MANIFEST).exists():
        return set()
    return set(json.loads((target / MANIFEST).read_text()).get("populations", {}))


def _local_store(path: Path, zoo: str) -> Path:
    for candidate in (path, path / zoo):
        if (candidate / MANIFEST).exists():
            return candidate
    raise StoreError(f"no store of {zoo} at {path} (looked for {MANIFEST} there and in {path / zoo})")


class LocalFetcher:
    """A store (or static mirror) on a local or mounted file system: files are copied."""

    def __init__(self, zoo_dir: Path):
        self.zoo_dir = zoo_dir

    def fetch(self, relative: str, dest: Path) -> None:
        source = self.zoo_dir / relative
        if not source.exists():
            raise FileNotFoundError(source)
        shutil.copyfile(source, dest)

    def __str__(self) -> str:
        return str(self.zoo_dir)


class HttpFetcher:
    """Plain HTTP(S): resumes ``.part`` files with Range requests and retries cut transfers."""

    def __init__(self, base_url: str, progress: bool = True):
        self.base_url, self.progress = base_url, progress

    def fetch(self, relative: str, dest: Path) -> None:
        url = f"{self.base_url}/{quote(relative)}"
        error: Exception | None = None
        for _ in range(RETRIES):
            try:
                if self._transfer(url, relative, dest):
                    return
                error = ConnectionError("the connection closed before the whole file arrived")
            except HTTPError as exc:
                if exc.code == 404:
                    raise FileNotFoundError(url) from None
                if exc.code != 416:  # 416: nothing left to fetch past the .part file
                    raise StoreError(f"{url}: HTTP {exc.code} {exc.reason}") from None
                return
            except (URLError, OSError, http.client.HTTPException) as exc:
                error = exc
        raise StoreError(
            f"download of {url} failed after {RETRIES} tries ({error}); run the same command again to resume"
        )

    def _transfer(self, url: str, relative: str, dest: Path) -> bool:
        """One request; True when the file is complete, False when the connection was cut."""
        have = dest.stat().st_size if dest.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with urlopen(Request(url, headers=headers), timeout=60) as response:
            if have and response.status != 206:  # the server ignored the range: start over
                have = 0
            total = have + int(response.headers.get("Content-Length", 0))
            with (
                open(dest, "ab" if have else "wb") as fh,
                tqdm(
                    total=total or None,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    desc=relative,
                    disable=not self.progress,
                    leave=False,
                ) as bar,
            ):
                while block := response.read(CHUNK):
                    fh.write(block)
                    bar.update(len(block))
        return not total or dest.stat().st_size >= total

    def __str__(self) -> str:
        return self.base_url


class HubFetcher:
    """A Hugging Face Hub dataset repo; files come through the Hub cache (works offline once cached)."""

    def __init__(self, repo_id: str, revision: str | None, populations: tuple[str, ...] | list[str] | None):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

        self.repo_id = repo_id
        patterns = None
        if populations:
            patterns = [MANIFEST, MODELS_TABLE, CARD, *(f"{p}/*" for p in populations)]
        try:
            self.snapshot = Path(
                snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=patterns)
            )
        except (LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"cannot get dataset {repo_id} from the Hugging Face Hub: {first}") from None

    def fetch(self, relative: str, dest: Path) -> None:
        """Link the cached file into the store (copy where links are not allowed)."""
        source = self.snapshot / relative
        if not source.exists():
            raise FileNotFoundError(source)
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        try:
            dest.symlink_to(source.resolve())
        except OSError:
            shutil.copyfile(source, dest)

    def __str__(self) -> str:
        return f"hf://datasets/{self.repo_id}"
