"""A small Zenodo client: a record's file list, and verified, resumable downloads into a cache.

The records API (``GET <base>/api/records/<id>``) lists each file with its name, size, md5 and
download link. Files land in ``<cache>/zenodo/<record>/<md5>/<name>``: a file is keyed by its
record and its content, so a new version of a record never mixes with an old one and a file
already verified is never fetched again. A transfer writes ``<name>.part`` and continues it with an
HTTP Range request after a cut; reads are bounded by the size the record declares, and the md5
is checked before the file is renamed into place. The real Zenodo and a test server differ only in
the base URL (``$ZOO_TWINS_ZENODO_URL``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import quote
from urllib.request import Request, urlopen

from tqdm.auto import tqdm

from zoo_dataset.errors import ChecksumError, StoreError

ZENODO_URL_ENV = "ZOO_TWINS_ZENODO_URL"
DEFAULT_ZENODO_URL = "https://zenodo.org"
PART = ".part"
RETRIES = 5
BACKOFF_S = 1.0  # wait 1, 2, 4, 8 s between tries
CHUNK = 1 << 20
TIMEOUT_S = 60
MAX_RECORD_BYTES = 16 << 20  # a record's metadata is kilobytes; more is not a Zenodo answer


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


def zenodo_url() -> str:
    return os.environ.get(ZENODO_URL_ENV, DEFAULT_ZENODO_URL).rstrip("/")


class ZenodoClient:
    """Record listings and downloads from one Zenodo instance (``base_url``, default zenodo.org)."""

    def __init__(self, base_url: str | None = None, progress: bool = True,
                 sleep: Callable[[float], None] = time.sleep):
        self.base_url = (base_url or zenodo_url()).rstrip("/")
        self.progress, self.sleep = progress, sleep

    def files(self, record: int) -> list[ZenodoFile]:
        """The files of a record, as the records API lists them."""
        url = f"{self.base_url}/api/records/{int(record)}"
        body = self._retrying(url, lambda: self._get(url))
        try:
            entries = json.loads(body)["files"]
            if isinstance(entries, dict):  # InvenioRDM's own serialisation: {"entries": {key: {...}}}
                entries = list(entries["entries"].values())
            return [_parse_file(int(record), entry, self.base_url) for entry in entries]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{url} is not a Zenodo record listing ({type(exc).__name__}: {exc})") from None

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
        """``attempt()``, tried again after connection faults and server errors, with backoff."""
        error: Exception | None = None
        for n in range(RETRIES):
            if n:
                self.sleep(BACKOFF_S * 2 ** (n - 1))
            try:
                return attempt()
            except HTTPError as exc:
                if exc.code == 404:
                    raise StoreError(f"{url}: not found on Zenodo (HTTP 404)") from None
                if exc.code < 500 and exc.code != 429:
                    raise StoreError(f"{url}: HTTP {exc.code} {exc.reason}") from None
                error = exc
            except (URLError, OSError, http.client.HTTPException, _CutTransfer) as exc:
                error = exc
        raise StoreError(f"{url} failed after {RETRIES} tries ({error}); run the same command again to resume")

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
            with (open(part, "ab" if have else "wb") as fh,
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


def _parse_file(record: int, entry: dict, base_url: str) -> ZenodoFile:
    """One ``files`` entry; accepts the current API (key, size, ``md5:`` checksum, links.self) and the
    legacy one (filename, filesize, links.download)."""
    key = str(entry.get("key") or entry["filename"])
    if "/" in key or key in ("", ".", ".."):
        raise ValueError(f"file name {key!r} is not a plain file name")
    algorithm, _, digest = str(entry["checksum"]).rpartition(":")
    if algorithm not in ("", "md5") or len(digest) != 32:
        raise ValueError(f"{key}: checksum {entry['checksum']!r} is not an md5")
    links = entry.get("links") or {}
    url = links.get("content") or links.get("self") or links.get("download")
    if not url:
        url = f"{base_url}/api/records/{record}/files/{quote(key)}/content"
    return ZenodoFile(record, key, int(entry.get("size", entry.get("filesize"))), digest.lower(), str(url))
