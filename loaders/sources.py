"""Where a download comes from: the source names, their one default, and the rule that sources never mix.

A source is ``hub`` (alias ``hf``), ``modelzoos`` (the published Model Zoos on Zenodo), ``mirror``
(with a URL), an ``http(s)://`` mirror URL, or a local path; any other ``scheme://`` is refused
rather than taken for a folder name. A downloaded store records its origin (source, location,
revision) in its manifest; files from another origin are never added to it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

from releases.modelzoos import POPULATIONS, pinned_versions
from releases.zenodo import zenodo_url
from zoo_dataset.errors import StoreError, ZooSpecError
from zoo_dataset.store.manifest import MANIFEST, Manifest

HF_ORG_ENV = "ZOO_TWINS_HF_ORG"
DEFAULT_HF_ORG = "zoo-twins"
MIRROR_ENV = "ZOO_TWINS_MIRROR"
SOURCE_ENV = "ZOO_TWINS_SOURCE"
DEFAULT_SOURCE = "hub"
SOURCE_MODELZOOS = "modelzoos"
URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def default_repo_id(zoo: str) -> str:
    return f"{os.environ.get(HF_ORG_ENV, DEFAULT_HF_ORG)}/{zoo}"


def default_source() -> str:
    """``$ZOO_TWINS_SOURCE`` if set, else the Hub: the one default of ``zoo-download`` and ``download=True``."""
    return os.environ.get(SOURCE_ENV, "").strip() or DEFAULT_SOURCE


def source_origin(zoo: str, source: str | None, repo_id: str | None = None, url: str | None = None,
                  revision: str | None = None) -> dict[str, str | None]:
    """What a download comes from: ``{"source": hub|modelzoos|mirror|local, "location", "revision"}``.

    ``source`` is ``hub`` (alias ``hf``), ``modelzoos`` (the published Model Zoos on Zenodo),
    ``mirror`` (``url`` or ``$ZOO_TWINS_MIRROR``), an ``http(s)://`` mirror URL, or a local path.
    ``revision`` pins a Hub revision (branch, tag or commit) or a Zenodo version id (modelzoos).
    """
    source = source or default_source()
    if source in ("hub", "hf"):
        return {"source": "hub", "location": repo_id or default_repo_id(zoo), "revision": revision}
    if source == SOURCE_MODELZOOS:
        pinned_versions(revision, POPULATIONS)  # the one parser; the zoo's own populations are checked later
        return {"source": SOURCE_MODELZOOS, "location": zenodo_url(), "revision": revision}
    if revision is not None:
        raise ZooSpecError(f"--revision applies to the Hub (a branch, tag or commit) and to modelzoos (a Zenodo "
                           f"version id); {source} has no revisions")
    scheme = URL_SCHEME.match(source)
    if scheme and scheme.group(1).lower() not in ("http", "https"):
        raise ZooSpecError(f"source {source!r}: {scheme.group(1)}:// is not a source; use hub, modelzoos, mirror, "
                           "an http(s) mirror URL or a local path")
    if source == "mirror" or source.startswith(("http://", "https://")):
        base = source if source != "mirror" else url or os.environ.get(MIRROR_ENV)
        if not base:
            raise ZooSpecError(f"no mirror URL: pass --url or set {MIRROR_ENV}")
        parsed = urlparse(base)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ZooSpecError(f"mirror URL {base!r} is not an http(s) URL such as https://host/zoos")
        return {"source": "mirror", "location": base.rstrip("/"), "revision": None}
    return {"source": "local", "location": str(Path(source).expanduser().resolve()), "revision": None}


def check_origin(target: Path, origin: dict) -> None:
    """Refuse to add files from one source to a store that came from another (or was built here)."""
    if not (target / MANIFEST).exists():
        return
    have = Manifest.load(target).origin
    same = {k: have.get(k) for k in ("source", "location", "revision")} == {
        k: origin.get(k) for k in ("source", "location", "revision")}
    if not same:
        was = (f"{have.get('source')} {have.get('location')}" + (f"@{have['revision']}" if have.get("revision") else "")
               if have else "a build on this machine")
        raise StoreError(f"{target} holds {target.name} from {was}; it is not mixed with {origin['source']} "
                         f"{origin['location']}: pass another root (--root) for this source")
