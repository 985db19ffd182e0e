"""A small Zenodo client: a record's latest (or pinned) version, its file list, and verified,
resumable downloads into a cache.

Zenodo runs on InvenioRDM: ``GET <base>/api/records/<concept id>`` answers 404 for the concept
(parent) ids that DOIs name (zenodo/zenodo#2499), while ``GET <base>/api/records/<id>/versions/latest``
answers the latest version for a version id and, per InvenioRDM's ``read_latest`` service
(inveniosoftware/invenio-drafts-resources), for a parent id too. A record is therefore resolved
through ``versions/latest`` (the concept first, then a known version), and a pinned version is read
directly; either answer is used only if it names the zoo's concept record as its own. The listing
gives each file's name, size, md5 and download link; ids must be ASCII digits, the name a plain
file name (:func:`zoo_dataset.names.plain_file_name`: no separator, no control character, a name
before its extension; two entries of one name are refused), the md5 32 hex digits (both become
path components) and the link an http(s) URL on the configured host. Files land in
``<cache>/zenodo/<record>/<md5>/<name>``: a file is keyed by its version record and its content, so
versions never mix and a verified file is never fetched again. A transfer writes ``<name>.part``
and continues it with an HTTP Range request after a cut; reads are bounded by the size the record
declares, and the md5 is checked before the file is renamed into place. Requests, retries and the
translation of their failures are :mod:`releases.network`'s (rate limits waited out a bounded
number of times, no network failing at once, redirects followed only within the host); JSON is
parsed by :func:`zoo_dataset.inputs.parse_json`. The real Zenodo and a test server differ only in
the base URL (``$ZOO_TWINS_ZENODO_URL``).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlparse

from tqdm.auto import tqdm

from zoo_dataset.errors import ChecksumError, StoreError
from zoo_dataset.inputs import parse_json
from zoo_dataset.names import plain_file_name

from .network import CutTransfer, NotFound, one_line, open_url, retrying

ZENODO_URL_ENV = "ZOO_TWINS_ZENODO_URL"
DEFAULT_ZENODO_URL = "https://zenodo.org"
PART = ".part"
CHUNK = 1 << 20
MAX_RECORD_BYTES = 16 << 20  # a record's metadata is kilobytes; more is not a Zenodo answer
MD5 = re.compile(r"[0-9a-fA-F]{32}")
RECORD_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only (str.isdigit takes any script's digits)


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


def zenodo_url() -> str:
    return os.environ.get(ZENODO_URL_ENV, DEFAULT_ZENODO_URL).rstrip("/")


def record_id(value: object, what: str = "a record id") -> int:
    """A Zenodo record id: a JSON integer or a string of ASCII digits, positive and at most 18 digits
    (Zenodo's are 7 or 8); ValueError for anything else (``True``, ``"١٢٣"``, 5000 digits)."""
    if isinstance(value, str) and RECORD_ID.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 10**18:
        raise ValueError(f"{what} {one_line(repr(value))[:40]} is not a Zenodo record id (ASCII digits)")
    return value


class ZenodoClient:
    """Record listings and downloads from one Zenodo instance (``base_url``, default zenodo.org)."""

    def __init__(self, base_url: str | None = None, progress: bool = True,
                 sleep: Callable[[float], None] = time.sleep):
        self.base_url = (base_url or zenodo_url()).rstrip("/")
        self.progress, self.sleep = progress, sleep

    def latest(self, concept: int, known: Sequence[int] = ()) -> ZenodoRecord:
        """The latest version of the concept record: ``versions/latest`` of the concept id, then of each
        known version id, until one is found; an answer that is not a version of ``concept`` is refused.
        A 404 for one of them never reaches the user alone."""
        tried = []
        for record in (concept, *known):
            url = f"{self.base_url}/api/records/{int(record)}/versions/latest"
            try:
                return self._of_concept(self._record(url), concept, url)
            except NotFound:
                tried.append(str(int(record)))
        raise StoreError(f"Zenodo at {self.base_url} has no record {' or '.join(tried)} (versions/latest answered "
                         "404 for each); is the record id in modelzoos.toml right?")

    def version(self, version: int, concept: int) -> ZenodoRecord:
        """One pinned version (``GET /api/records/<version>``), refused unless it is a version of ``concept``."""
        url = f"{self.base_url}/api/records/{int(version)}"
        try:
            record = self._record(url)
        except NotFound:
            raise StoreError(f"Zenodo at {self.base_url} has no record version {version} (HTTP 404); a version id "
                             "is the number in https://zenodo.org/records/<id> of one version") from None
        if record.version != int(version):
            raise StoreError(f"{url} answered record {record.version}, not {version}; refusing it")
        return self._of_concept(record, concept, url)

    @staticmethod
    def _of_concept(record: ZenodoRecord, concept: int, url: str) -> ZenodoRecord:
        """``record`` if its listing names ``concept`` as its concept (parent) record; else StoreError."""
        if record.concept != int(concept):
            named = f"record {record.concept}" if record.concept is not None else "no named concept record"
            raise StoreError(f"Zenodo record {record.version} (from {url}) is a version of {named}, not of record "
                             f"{concept}; refusing it (a --revision must pin a version of the zoo's own record)")
        return record

    def _record(self, url: str) -> ZenodoRecord:
        body = parse_json(retrying(url, lambda: self._get(url), self.sleep), f"the answer of {url}")
        try:
            return parse_record(body, self.base_url)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"{url} is not a Zenodo record listing ({type(exc).__name__}: "
                             f"{one_line(exc)[:200]})") from None

    def download(self, file: ZenodoFile, cache: Path) -> Path:
        """The verified file in ``cache`` (fetched, or continued from its ``.part``, when absent)."""
        dest = Path(cache) / file.cache_path
        if dest.is_file() and dest.stat().st_size == file.size:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + PART)
        try:
            retrying(file.url, lambda: self._transfer(file, part), self.sleep)
        except NotFound:
            raise StoreError(f"{file.url}: Zenodo lists {file.key} in record {file.record} but answers 404 for "
                             "it") from None
        got = md5_file(part)
        if got != file.md5:
            part.unlink()
            raise ChecksumError(f"{file.key} from Zenodo record {file.record} is corrupt (md5 {got}, the record says "
                                f"{file.md5}); it was discarded, run the same command again")
        os.replace(part, dest)
        return dest

    def _get(self, url: str) -> bytes:
        with open_url(url, {"Accept": "application/json"}) as response:
            body = response.read(MAX_RECORD_BYTES + 1)
        if len(body) > MAX_RECORD_BYTES:
            raise StoreError(f"{url}: the record listing exceeds {MAX_RECORD_BYTES} bytes")
        return body

    def _transfer(self, file: ZenodoFile, part: Path) -> None:
        """One request for the rest of ``part``; raises CutTransfer when the connection ends early."""
        have = part.stat().st_size if part.exists() else 0
        if have > file.size:  # not a prefix of this file: start over
            part.unlink()
            have = 0
        if have == file.size:
            return
        headers = {"Range": f"bytes={have}-"} if have else {}
        with open_url(file.url, headers) as response:
            if have and response.status != 206:  # the server ignored the range: start over
                have = 0
            with (open(part, "ab" if have else "wb") as fh,
                  tqdm(total=file.size, initial=have, unit="B", unit_scale=True, desc=file.key,
                       disable=not self.progress, leave=False) as bar):
                while have < file.size and (block := response.read(min(CHUNK, file.size - have))):
                    fh.write(block)
                    have += len(block)
                    bar.update(len(block))
        if have < file.size:
            raise CutTransfer(f"connection closed after {have} of {file.size} bytes")

    def __str__(self) -> str:
        return self.base_url


def md5_file(path: Path, chunk: int = CHUNK) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def parse_record(body: object, base_url: str) -> ZenodoRecord:
    """A records API answer: ``id`` (the version), ``conceptrecid`` or ``parent.id`` (the concept) and
    ``files`` (a list, or InvenioRDM's ``{"entries": {key: {...}}}``). Ids are ASCII digits; two
    files whose names are one name (:func:`~zoo_dataset.names.plain_file_name`) are refused."""
    if not isinstance(body, dict):
        raise TypeError(f"the answer is a {type(body).__name__}, not an object")
    version = record_id(body.get("id", body.get("recid")), "id")
    parent = body.get("parent") if isinstance(body.get("parent"), dict) else {}
    concept = body.get("conceptrecid") or parent.get("id")
    entries = body["files"]
    if isinstance(entries, dict):
        entries = list(entries["entries"].values())
    if not isinstance(entries, list):
        raise TypeError(f"files is a {type(entries).__name__}, not a list")
    files = [_parse_file(version, entry, base_url) for entry in entries]
    keys = [f.key for f in files]
    if len(set(keys)) != len(keys):
        raise ValueError(f"file {next(k for k in keys if keys.count(k) > 1)!r} is listed twice")
    return ZenodoRecord(version, record_id(concept, "conceptrecid") if concept is not None else None, files)


def _parse_file(record: int, entry: object, base_url: str) -> ZenodoFile:
    """One ``files`` entry; accepts the current API (key, size, ``md5:`` checksum, links.self) and the
    legacy one (filename, filesize, links.download). The key must be a plain file name (it becomes a
    path component), the md5 32 hex digits (another one) and the link http(s) on the configured host
    (a ``file://`` link is refused)."""
    if not isinstance(entry, dict):
        raise TypeError(f"a file entry is a {type(entry).__name__}, not an object")
    key = entry.get("key") or entry["filename"]
    if not isinstance(key, str):
        raise TypeError(f"a file name is a {type(key).__name__}, not a string")
    key = plain_file_name(key)
    algorithm, _, digest = str(entry["checksum"]).rpartition(":")
    if algorithm not in ("", "md5") or not MD5.fullmatch(digest):
        raise ValueError(f"{key}: checksum {entry['checksum']!r} is not an md5 (32 hex digits)")
    links = entry.get("links") or {}
    if not isinstance(links, dict):
        raise TypeError(f"{key}: links is a {type(links).__name__}, not an object")
    url = str(links.get("content") or links.get("self") or links.get("download") or
              f"{base_url}/api/records/{record}/files/{quote(key)}/content")
    parsed, base = urlparse(url), urlparse(base_url)
    if parsed.scheme not in ("http", "https") or parsed.netloc != base.netloc or not url.isprintable():
        raise ValueError(f"{key}: download link {url!r} is not an http(s) URL on {base.netloc}")
    size = entry.get("size", entry.get("filesize"))
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"{key}: size {size!r} is not a byte count")
    return ZenodoFile(record, key, size, digest.lower(), url)
