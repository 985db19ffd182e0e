"""Fetch a published store into the cache: from the Hugging Face Hub, an HTTP mirror, a local copy,
or the published Model Zoos on Zenodo (``modelzoos``, converted by :mod:`releases.modelzoos`).

A download holds the store's writer lock and assembles the whole new store in a folder beside the
target (``<root>/.<zoo>.download``): the manifest's every entry is checked to stay inside the store,
every file is read no further than the size the manifest declares and checked against its sha256
(a file that fails is deleted and reported), files of the local copy that are still current are
linked rather than fetched, and only when everything is verified does the new folder replace the
target in one rename. A failed download therefore leaves the old store exactly as it was; running
it again resumes from the staging folder (an HTTP transfer continues its ``.part`` file with a
Range request). The result is always one published version: populations of the local copy are
brought to the source's version along with the ones asked for.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
from pathlib import Path
from typing import Protocol
from urllib.error import HTTPError
from urllib.parse import quote

import pandas as pd
from tqdm.auto import tqdm

from releases.network import CutTransfer, NotFound, content_length, open_url, retrying
from zoo_dataset.errors import ChecksumError, StoreError, StoreUsageError, ZooSpecError
from zoo_dataset.store.files import MAX_UNDECLARED_BYTES, file_matches, sha256_file
from zoo_dataset.store.layout_on_disk import MODELS_TABLE
from zoo_dataset.store.lock import writer_lock
from zoo_dataset.store.manifest import MANIFEST, MAX_MANIFEST_BYTES, Manifest
from zoo_dataset.store.paths import check_writable, check_zoo_name, inside

from .cache import cache_dir, store_root
from .sources import SOURCE_MODELZOOS, check_origin, source_origin
from .sources import default_repo_id as default_repo_id  # re-exported: older imports name this module

CARD = "README.md"
DOWNLOADS = "downloads"  # verified Zenodo files, shared by every store root: <cache>/downloads
PART = ".part"
RETRIES = 4
CHUNK = 1 << 20
MAX_CARD_BYTES = 16 << 20


class Fetcher(Protocol):
    """Puts one file of the published store (path relative to the zoo directory) at ``dest``,
    reading no more than ``limit`` bytes (a longer file raises StoreError)."""

    def fetch(self, relative: str, dest: Path, limit: int) -> None: ...


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
    downloads are pinned by ``revision`` (branch, tag or commit), modelzoos downloads by a Zenodo version
    id (``"6632087"`` or ``"original=6632087,vd=7023336"``; default: the latest version). ``populations`` limits what is
    fetched; populations missing from a store of the same origin are added to it. ``files`` names
    the Zenodo zip per population where a record holds several (modelzoos only).
    """
    target = store_root(root) / check_zoo_name(zoo)
    origin = source_origin(zoo, source, repo_id, url, revision)
    local = _local_store(Path(origin["location"]), zoo) if origin["source"] == "local" else None
    if local is not None and local.resolve() == target.resolve():
        raise ZooSpecError(f"--source {source} is the download's own target {target}; choose another --root")
    check_origin(target, origin)
    if origin["source"] == SOURCE_MODELZOOS:
        from releases.modelzoos import fetch_modelzoos  # deferred: conversion code only when needed

        with writer_lock(target):
            return fetch_modelzoos(zoo, store_root(root), cache_dir() / DOWNLOADS, populations, files, progress,
                                   revision=revision)
    if origin["source"] == "hub":  # the snapshot must also hold the populations a local copy has (refreshed too)
        present = _local_manifest(target)
        if populations and present:
            populations = sorted(set(populations) | {n for n, p in present.populations.items() if p.shards})
        fetcher: Fetcher = HubFetcher(origin["location"], revision, populations)
    elif origin["source"] == "mirror":
        fetcher = HttpFetcher(f"{origin['location']}/{quote(zoo)}", progress)
    else:
        fetcher = LocalFetcher(local)
    return install(fetcher, target, populations, origin)


def install(fetcher: Fetcher, target: Path, populations: tuple[str, ...] | list[str] | None = None,
            origin: dict | None = None) -> Path:
    """Fetch and verify the selected populations into a staging folder, then swap it in for ``target``."""
    target = Path(target)
    with writer_lock(target):
        _recover_swap(target)
        old = _local_manifest(target)
        staging = target.with_name(f".{target.name}.download")
        if staging.is_symlink():
            raise StoreError(f"{staging} is a link; downloads assemble the store in a folder of their own "
                             "(remove the link)")
        staging.mkdir(parents=True, exist_ok=True)
        check_writable(staging)
        manifest = _remote_manifest(fetcher, staging)
        if manifest.zoo != target.name:
            raise StoreError(f"{fetcher} holds zoo {manifest.zoo!r}, not {target.name!r}; refusing it")
        upstream = manifest.origin
        manifest.origin = {**(origin or {"source": str(fetcher)}), **({"upstream": upstream} if upstream else {})}
        keep = _populations(manifest, old, populations)
        manifest.populations = {n: p for n, p in manifest.populations.items() if n in keep}
        files = {}
        for info in manifest.populations.values():
            for shard in info.shards:
                files[shard.file] = (shard.sha256, shard.bytes)
                files[shard.states_file] = (shard.states_sha256, shard.states_bytes)
        for relative, (sha256, size) in files.items():
            _place(fetcher, staging, target, relative, sha256, size)
        _fetch_models_table(fetcher, staging, manifest)
        with contextlib.suppress(FileNotFoundError):  # the card is documentation; a store without one loads
            _fetch_to(fetcher, CARD, staging / CARD, MAX_CARD_BYTES)
        _remove_unlisted(staging, {*files, MODELS_TABLE, CARD})
        manifest.save(staging)  # its origin marks a downloaded store: readers verify shards on first open
        _swap_in(staging, target)
    return target


def _populations(manifest: Manifest, old: Manifest | None,
                 populations: tuple[str, ...] | list[str] | None) -> set[str]:
    """Those asked for plus those the local copy holds (refreshed too, so the store stays one version)."""
    published = [name for name, info in manifest.populations.items() if info.shards]
    wanted = list(populations) if populations else published
    missing = [p for p in wanted if p not in published]
    if missing:
        raise StoreUsageError(
            f"the published {manifest.zoo} has no {', '.join(missing)} population "
            f"(it has: {', '.join(published)})"
        )
    present = {n for n, p in old.populations.items() if p.shards} if old else set()
    gone = present - set(published)
    if gone:
        raise StoreError(f"the local copy holds {', '.join(sorted(gone))}, which the source no longer publishes; "
                         "download into another --root to keep both")
    return set(wanted) | present


def _local_manifest(target: Path) -> Manifest | None:
    """The manifest of the store already at ``target`` (None when there is none)."""
    if (target / MANIFEST).exists():
        try:
            return Manifest.load(target)
        except StoreError:
            return None  # a damaged local copy is replaced whole, nothing of it reused
    if target.exists() and any(target.iterdir()):
        raise StoreError(f"{target} exists but holds no store (no {MANIFEST}); move it away or use another --root")
    return None


def _remote_manifest(fetcher: Fetcher, staging: Path) -> Manifest:
    part = staging / (MANIFEST + PART)
    with contextlib.suppress(FileNotFoundError):
        part.unlink()  # always fetched afresh: the source may have moved on
    try:
        _fetch_to(fetcher, MANIFEST, part, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise StoreError(f"{fetcher} has no {MANIFEST}: is the zoo published there?") from None
    os.replace(part, staging / MANIFEST)
    try:
        return Manifest.load(staging)
    except StoreError as exc:  # named as the source's, not by the staging path that is about to go
        reason = str(exc).replace(str(staging / MANIFEST), MANIFEST)
        raise StoreError(f"the manifest from {fetcher} is refused: {reason}") from None
    finally:
        (staging / MANIFEST).unlink()  # the manifest goes in last, after every file it lists


def _fetch_to(fetcher: Fetcher, relative: str, dest: Path, limit: int) -> None:
    """Fetch into ``dest``; a failed fetch that got cut by its size limit leaves nothing behind."""
    try:
        fetcher.fetch(relative, dest, limit)
    except StoreError:
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        raise


def _place(fetcher: Fetcher, staging: Path, target: Path, relative: str, sha256: str, size: int | None) -> None:
    """Put ``relative`` into the staging folder: kept if already verified there, linked from the
    local copy where that is current, else fetched (at most ``size`` bytes) and checked. Only
    regular files of the declared size are hashed (a FIFO or /dev/zero would never end)."""
    dest = inside(staging, relative, "manifest entry")
    if file_matches(dest, sha256, size):
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    current = inside(target, relative, "manifest entry")
    if file_matches(current, sha256, size):
        _link_or_copy(current, dest)
        return
    part = dest.with_name(dest.name + PART)
    try:
        _fetch_to(fetcher, relative, part, size if size is not None else MAX_UNDECLARED_BYTES)
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


def _link_or_copy(source: Path, dest: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    if source.is_symlink():  # a Hub store's file: link to the same cached blob
        dest.symlink_to(os.readlink(source))
        return
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def _fetch_models_table(fetcher: Fetcher, staging: Path, manifest: Manifest) -> None:
    """The models table, checked against the manifest's sha256 (older stores: it must parse and list
    every model of the manifest)."""
    dest = staging / MODELS_TABLE
    part = dest.with_name(dest.name + PART)
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    _fetch_to(fetcher, MODELS_TABLE, part, MAX_UNDECLARED_BYTES)
    if manifest.models_sha256 is not None:
        if sha256_file(part) != manifest.models_sha256:
            part.unlink()
            raise ChecksumError(f"{MODELS_TABLE} from {fetcher} is corrupt (sha256 differs from the manifest's); "
                                "discarded")
        os.replace(part, dest)
        return
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


def _remove_unlisted(staging: Path, keep: set[str]) -> None:
    """The staging folder becomes the store: drop leftovers of earlier attempts (other versions)."""
    for path in sorted(staging.rglob("*"), reverse=True):
        relative = path.relative_to(staging).as_posix()
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif relative not in keep:
            path.unlink()


def _swap_in(staging: Path, target: Path) -> None:
    """Make ``staging`` the store at ``target`` in one rename; the replaced copy is then deleted."""
    if not target.exists():
        os.rename(staging, target)
        return
    if not _exchange(staging, target):  # no atomic exchange here: two renames, undone by _recover_swap
        os.rename(target, _replaced(target))
        os.rename(staging, target)
        staging = _replaced(target)
    shutil.rmtree(staging)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _replaced(target: Path) -> Path:
    return target.with_name(f".{target.name}.replaced")


def _recover_swap(target: Path) -> None:
    """Finish or undo a two-rename swap that a killed download left half done."""
    replaced = _replaced(target)
    if replaced.exists():
        if target.exists():
            shutil.rmtree(replaced)
        else:
            os.rename(replaced, target)


def _local_store(path: Path, zoo: str) -> Path:
    for candidate in (path, path / zoo):
        if (candidate / MANIFEST).exists():
            return candidate
    raise StoreError(f"no store of {zoo} at {path} (looked for {MANIFEST} there and in {path / zoo})")


class LocalFetcher:
    """A store (or static mirror) on a local or mounted file system: files are copied."""

    def __init__(self, zoo_dir: Path):
        self.zoo_dir = zoo_dir

    def fetch(self, relative: str, dest: Path, limit: int) -> None:
        source = inside(self.zoo_dir, relative, "manifest entry")
        if not source.is_file():
            raise FileNotFoundError(source)
        with open(source, "rb") as src, open(dest, "wb") as out:
            copied = 0
            while block := src.read(min(CHUNK, limit + 1 - copied)):
                copied += len(block)
                if copied > limit:
                    raise StoreError(f"{source} is larger than the {limit} bytes the manifest declares; refusing it")
                out.write(block)

    def __str__(self) -> str:
        return str(self.zoo_dir)


class HttpFetcher:
    """Plain HTTP(S): resumes ``.part`` files with Range requests and retries cut transfers
    (:func:`releases.network.retrying`: the one translation of network failures)."""

    def __init__(self, base_url: str, progress: bool = True):
        self.base_url, self.progress = base_url, progress

    def fetch(self, relative: str, dest: Path, limit: int) -> None:
        url = f"{self.base_url}/{quote(relative)}"
        try:
            retrying(url, lambda: self._transfer(url, relative, dest, limit), tries=RETRIES)
        except NotFound:
            raise FileNotFoundError(url) from None

    def _transfer(self, url: str, relative: str, dest: Path, limit: int) -> None:
        """One request of at most ``limit`` bytes in all; CutTransfer when the connection was cut."""
        have = dest.stat().st_size if dest.exists() else 0
        if have > limit:
            have = 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            response = open_url(url, headers)
        except HTTPError as exc:
            if exc.code == 416 and have:  # nothing left to fetch past the .part file
                return
            raise
        with response:
            if have and response.status != 206:  # the server ignored the range: start over
                have = 0
            total = have + (content_length(response) or 0)
            if total > limit:
                raise StoreError(f"{url} announces {total} bytes, more than the {limit} its manifest declares")
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
                written = have
                while block := response.read(min(CHUNK, limit + 1 - written)):
                    written += len(block)
                    if written > limit:
                        raise StoreError(f"{url} sends more than the {limit} bytes its manifest declares; "
                                         "refusing it")
                    fh.write(block)
                    bar.update(len(block))
        if total and dest.stat().st_size < total:
            raise CutTransfer("the connection closed before the whole file arrived")

    def __str__(self) -> str:
        return self.base_url


def other_sources(repo_id: str) -> str:
    """Where else the zoo of ``repo_id`` (``<org>/<zoo>``) comes from, for the message of a missing repo."""
    from releases.modelzoos import table  # the published Model Zoos' names only, no conversion code

    zoo = repo_id.rpartition("/")[2]
    modelzoos = "--source modelzoos (the published Model Zoos on Zenodo), " if zoo in table()["zoo"] else ""
    return f"{modelzoos}--source mirror --url URL, a local store path, or `zoo-build --zoo {zoo}`"


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
        except RepositoryNotFoundError:
            raise StoreError(f"{repo_id} is not published on the Hugging Face Hub (no such dataset repo); other "
                             f"sources: {other_sources(repo_id)}") from None
        except LocalEntryNotFoundError:  # huggingface_hub's answer when the Hub cannot be reached
            from huggingface_hub import constants

            why = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE
                   else "cannot reach huggingface.co; no network?")
            raise StoreError(f"cannot get dataset {repo_id} from the Hugging Face Hub: the Hub cache holds no copy "
                             f"of it and {why}") from None
        except HfHubHTTPError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"cannot get dataset {repo_id} from the Hugging Face Hub: {first}") from None

    def fetch(self, relative: str, dest: Path, limit: int) -> None:
        """Link the cached file into the store (copy where links are not allowed)."""
        source = inside(self.snapshot, relative, "manifest entry")
        if not source.exists():
            raise FileNotFoundError(source)
        if source.stat().st_size > limit:
            raise StoreError(f"{source} is larger than the {limit} bytes the manifest declares; refusing it")
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        try:
            dest.symlink_to(source.resolve())
        except OSError:
            shutil.copyfile(source, dest)

    def __str__(self) -> str:
        return f"hf://datasets/{self.repo_id}"
