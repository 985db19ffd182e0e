"""A small Zenodo client: a record's latest (or pinned) version, its file list, and verified,
resumable downloads into a cache.

Zenodo runs on InvenioRDM: ``GET <base>/api/records/<concept id>`` answers 404 for the concept
(parent) ids that DOIs name (zenodo/zenodo#2499), while ``GET <base>/api/records/<id>/versions/latest``
answers the latest version for a version id and, per InvenioRDM's ``read_latest`` service
(inveniosoftware/invenio-drafts-resources), for a parent id too. A record is therefore resolved
through ``versions/latest`` (the concept first, then a known version), and a pinned version is read
directly and checked to belong to its concept. The listing gives each file's name, size, md5 and
download link; the md5 must be 32 hex digits (it becomes a path component) and the link an
http(s) URL on the configured host. Files land in ``<cache>/zenodo/<record>/<md5>/<name>``: a file
is keyed by its version record and its content, so versions never mix and a verified file is never
fetched again. A transfer writes ``<name>.part`` and continues it with an HTTP Range request after a
cut; reads are bounded by the size the record declares, and the md5 is checked before the file is
renamed into place. Rate limits (429, ``Retry-After``) are waited out a bounded number of times; no
network (a failed name lookup, no route) fails at once. The real Zenodo and a test server differ
only in the base URL (``$ZOO_TWINS_ZENODO_URL``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlparse
from urllib.request import Request, urlopen

from tqdm.auto import tqdm

from zoo_dataset.errors import ChecksumError, StoreError
from zoo_dataset.store.files import open_for_writing

from .network import http_error, one_line, retry_after, unreachable

ZENODO_URL_ENV = "ZOO_TWINS_ZENODO_URL"
DEFAULT_ZENODO_URL = "https://zenodo.org"
PART = ".part"
RETRIES = 5
BACKOFF_S = 1.0  # wait 1, 2, 4, 8 s between tries
CHUNK = 1 << 20
TIMEOUT_S = 60
MAX_RECORD_BYTES = 16 << 20  # a record's metadata is kilobytes; more is not a Zenodo answer
MD5 = re.compile(r"[0-9a-fA-F]{32}")


@dataclass(frozen=True)
class ZenodoFile:
    record: int
    key: str  # the file name in the record
    size: int
    md5: str
    url: str

    @property
    def cache_path(self) -> Path:
        """Where the verified file lives, relative to the cache: keyed by record and checksum."""
        return Path("zenodo") / str(self.record) / self.md5 / self.key


@dataclass(frozen=True)
class ZenodoRecord:
    """One version of a record: its own id, its concept (parent) id where the listing names it, its files."""

    version: int
    concept: int | None
    files: list[ZenodoFile]


class RecordNotFound(StoreError):
    """Zenodo answered 404 for a record id (a concept id on the plain records endpoint, or an unknown id)."""


def zenodo_url() -> str:
    return os.environ.get(ZENODO_URL_ENV, DEFAULT_ZENODO_URL).rstrip("/")


class ZenodoClient:
    """Record listings and downloads from one Zenodo instance (``base_url``, default zenodo.org)."""

    def __init__(self, base_url: str | None = None, progress: bool = True,
                 sleep: Callable[[float], None] = time.sleep):
        self.base_url = (base_url or zenodo_url()).rstrip("/")
        self.progress, self.sleep = progress, sleep

    def latest(self, ids: Sequence[int]) -> ZenodoRecord:
        """The latest version of the record: ``versions/latest`` of each id in turn (the concept id, then
        known version ids) until one is found; a 404 for one of them never reaches the user alone."""
        tried = []
        for record in ids:
            url = f"{self.base_url}/api/records/{int(record)}/versions/latest"
            try:
                return self._record(url)
            except RecordNotFound:
                tried.append(str(int(record)))
        raise StoreError(f"Zenodo at {self.base_url} has no record {' or '.join(tried)} (versions/latest answered "
                         "404 for each); is the record id in modelzoos.toml right?")

    def version(self, version: int, concept: int | None = None) -> ZenodoRecord:
        """One pinned version (``GET /api/records/<version>``), refused unless it is a version of ``concept``."""
        url = f"{self.base_url}/api/records/{int(version)}"
        try:
            record = self._record(url)
        except RecordNotFound:
            raise StoreError(f"Zenodo at {self.base_url} has no record version {version} (HTTP 404); a version id "
                             "is the number in https://zenodo.org/records/<id> of one version") from None
        if concept is not None and record.concept is not None and record.concept != int(concept):
            raise StoreError(f"Zenodo record {version} is a version of record {record.concept}, not of {concept}; "
                             "pin a version of the zoo's own record")
        return record

    def _record(self, url: str) -> ZenodoRecord:
        body = self._retrying(url, lambda: self._get(url))
        try:
            return parse_record(json.loads(body), self.base_url)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"{url} is not a Zenodo record listing ({type(exc).__name__}: "
                             f"{one_line(exc)})") from None

    def download(self, file: ZenodoFile, cache: Path) -> Path:
        """The verified file in ``cache`` (fetched, or continued from its ``.part``, when absent)."""
        dest = Path(cache) / file.cache_path
        if dest.is_file() and dest.stat().st_size == file.size:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + PART)
        self._retrying(file.url, lambda: self._transfer(file, part))
        got = md5_file(part)
        if got != file.md5:
            part.unlink()
            raise ChecksumError(f"{file.key} from Zenodo record {file.record} is corrupt (md5 {got}, the record says "
                                f"{file.md5}); it was discarded, run the same command again")
        os.replace(part, dest)
        return dest

    def _retrying(self, url: str, attempt: Callable[[], object]):
        """``attempt()``, tried again after connection faults, server errors and rate limits (429 and 503
        wait their ``Retry-After``); no network fails at once, other answers below 500 too."""
        error: Exception | None = None
        for n in range(RETRIES):
            wait = BACKOFF_S * 2 ** n
            try:
                return attempt()
            except HTTPError as exc:
                if exc.code == 404:
                    raise RecordNotFound(f"{url}: not found on Zenodo (HTTP 404)") from None
                if exc.code in (429, 503):
                    wait = retry_after(exc, wait)
                elif exc.code < 500:
                    raise StoreError(http_error(url, exc)) from None
                error = exc
            except (URLError, OSError, http.client.HTTPException, _CutTransfer) as exc:
                if message := unreachable(exc, url):
                    raise StoreError(message) from None
                error = exc
            if n + 1 < RETRIES:
                self.sleep(wait)
        raise StoreError(f"{url} failed after {RETRIES} tries ({one_line(error)}); run the same command again "
                         "to resume")

    def _get(self, url: str) -> bytes:
        with urlopen(Request(url, headers={"Accept": "application/json"}), timeout=TIMEOUT_S) as response:
            body = response.read(MAX_RECORD_BYTES + 1)
        if len(body) > MAX_RECORD_BYTES:
            raise StoreError(f"{url}: the record listing exceeds {MAX_RECORD_BYTES} bytes")
        return body

    def _transfer(self, file: ZenodoFile, part: Path) -> None:
        """One request for the rest of ``part``; raises _CutTransfer when the connection ends early."""
        have = part.stat().st_size if part.exists() else 0
        if have > file.size:  # not a prefix of this file: start over
            part.unlink()
            have = 0
        if have == file.size:
            return
        headers = {"Range": f"bytes={have}-"} if have else {}
        with urlopen(Request(file.url, headers=headers), timeout=TIMEOUT_S) as response:
            if have and response.status != 206:  # the server ignored the range: start over
                have = 0
            with (open_for_writing(part, append=bool(have)) as fh,
                  tqdm(total=file.size, initial=have, unit="B", unit_scale=True, desc=file.key,
                       disable=not self.progress, leave=False) as bar):
                while have < file.size and (block := response.read(min(CHUNK, file.size - have))):
                    fh.write(block)
                    have += len(block)
                    bar.update(len(block))
        if have < file.size:
            raise _CutTransfer(f"connection closed after {have} of {file.size} bytes")

    def __str__(self) -> str:
        return self.base_url


class _CutTransfer(Exception):
    """The server closed the connection before the declared size arrived (retried with Range)."""


def md5_file(path: Path, chunk: int = CHUNK) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def parse_record(body: object, base_url: str) -> ZenodoRecord:
    """A records API answer: ``id`` (the version), ``conceptrecid`` or ``parent.id`` (the concept) and
    ``files`` (a list, or InvenioRDM's ``{"entries": {key: {...}}}``)."""
    if not isinstance(body, dict):
        raise TypeError(f"the answer is a {type(body).__name__}, not an object")
    version = int(body.get("id", body.get("recid")))
    parent = body.get("parent") if isinstance(body.get("parent"), dict) else {}
    concept = body.get("conceptrecid") or parent.get("id")
    entries = body["files"]
    if isinstance(entries, dict):
        entries = list(entries["entries"].values())
    if not isinstance(entries, list):
        raise TypeError(f"files is a {type(entries).__name__}, not a list")
    files = [_parse_file(version, entry, base_url) for entry in entries]
    return ZenodoRecord(version, int(concept) if concept is not None else None, files)


def _parse_file(record: int, entry: object, base_url: str) -> ZenodoFile:
    """One ``files`` entry; accepts the current API (key, size, ``md5:`` checksum, links.self) and the
    legacy one (filename, filesize, links.download). The md5 must be 32 hex digits (it becomes a path
    component) and the link http(s) on the configured host (a ``file://`` link is refused)."""
    if not isinstance(entry, dict):
        raise TypeError(f"a file entry is a {type(entry).__name__}, not an object")
    key = str(entry.get("key") or entry["filename"])
    if "/" in key or "\\" in key or key in ("", ".", ".."):
        raise ValueError(f"file name {key!r} is not a plain file name")
    algorithm, _, digest = str(entry["checksum"]).rpartition(":")
    if algorithm not in ("", "md5") or not MD5.fullmatch(digest):
        raise ValueError(f"{key}: checksum {entry['checksum']!r} is not an md5 (32 hex digits)")
    links = entry.get("links") or {}
    if not isinstance(links, dict):
        raise TypeError(f"{key}: links is a {type(links).__name__}, not an object")
    url = str(links.get("content") or links.get("self") or links.get("download") or
              f"{base_url}/api/records/{record}/files/{quote(key)}/content")
    parsed, base = urlparse(url), urlparse(base_url)
    if parsed.scheme not in ("http", "https") or parsed.netloc != base.netloc:
        raise ValueError(f"{key}: download link {url!r} is not an http(s) URL on {base.netloc}")
    size = entry.get("size", entry.get("filesize"))
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"{key}: size {size!r} is not a byte count")
    return ZenodoFile(record, key, size, digest.lower(), url)
