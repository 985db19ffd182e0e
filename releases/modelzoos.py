"""The published Model Zoos (modelzoos.cc) as stores: Zenodo zips in, ``original`` and ``vd`` populations out.

Which Zenodo record holds which zoo is data (``zoo_dataset/modelzoos.toml``: concept ids, known
version ids, real zip names where public code shows them, name fragments where they are inferred).
Each record is resolved to its latest version (or the version ``revision`` pins), and the manifest's
origin names the concept and the version fetched. The raw zips are the source: the records'
``.pt`` files are pickled Python objects and are never downloaded or unpickled, nor are their
``index_dict*.json`` files.
A new store is assembled in a staging folder next to its final place and renamed into place only
when every requested population converted; adding ``vd`` to a store of the same origin converts
in place, shard by shard (a reader never sees a half-written shard), and running the download
again continues a conversion that was cut or left partial.
"""

from __future__ import annotations

import tempfile
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import click

from zoo_dataset.errors import DataFormatError, StoreError, StoreUsageError, ZooSpecError
from zoo_dataset.names import same_name
from zoo_dataset.specs import get_spec
from zoo_dataset.store.manifest import MANIFEST, Manifest

from .zenodo import ZenodoClient, ZenodoFile, ZenodoRecord, record_id

SOURCE = "modelzoos"
POPULATIONS = ("original", "vd")


@dataclass(frozen=True)
class PublishedZip:
    population: str
    record: int  # the concept id (what the DOI names)
    versions: tuple[int, ...] = ()  # version ids seen in public code (tried after the concept)
    file: str | None = None  # the real zip name, where known
    match: tuple[str, ...] = ()  # inferred name fragments, where the name is not known
    folder: str | None = None  # the experiment folder inside the zip


def table() -> dict:
    return tomllib.loads(resources.files("zoo_dataset").joinpath("modelzoos.toml").read_text())


def published(zoo: str) -> dict[str, PublishedZip]:
    """The populations of ``zoo`` on modelzoos.cc and their Zenodo records."""
    data = table()
    zoos, records = data["zoo"], data["records"]
    if zoo not in zoos:
        raise StoreError(f"zoo {zoo!r} is not published on modelzoos.cc (published: {', '.join(zoos)}); "
                         f"build it with `zoo-build --zoo {zoo}`")
    out = {}
    for population, e in zoos[zoo].items():
        record = records[str(e["record"])]
        versions = (int(record["version"]),) if "version" in record else ()
        out[population] = PublishedZip(population, int(e["record"]), versions, e.get("file"),
                                       tuple(m.lower() for m in e.get("match", ())), e.get("folder"))
    return out


def pinned_versions(revision: str | None, populations: Sequence[str]) -> dict[str, int]:
    """``--revision``: a version id (for the original population's record) or ``POPULATION=ID,...``,
    each population at most once, ids ASCII digits (:func:`~releases.zenodo.record_id`)."""
    if revision is None:
        return {}
    pins: dict[str, int] = {}
    usage = (f"--revision {revision!r}: modelzoos takes a Zenodo version id (e.g. 6632087) or POPULATION=ID,... "
             f"(e.g. original=6632087,vd=7023336) for the populations {', '.join(populations)}")
    for part in str(revision).split(","):
        population, sep, value = part.strip().rpartition("=")
        population = population.strip() if sep else "original"
        try:
            version = record_id(value.strip(), "version id")
        except ValueError:
            raise ZooSpecError(usage) from None
        if population not in populations:
            raise ZooSpecError(usage)
        if population in pins:
            raise ZooSpecError(f"--revision {revision!r} pins the {population} population twice")
        pins[population] = version
    return pins


def choose_zip(files: list[ZenodoFile], entry: PublishedZip, zoo: str, chosen: str | None = None) -> ZenodoFile:
    """The record's zip holding this population: the one named (``--file``, else the known name), the
    only zip, or the one the inferred fragments match (``<fragment>.zip`` first, else containing it).
    Names are compared as :func:`~zoo_dataset.names.same_name` compares them."""
    zips = [f for f in files if f.key.lower().endswith(".zip")]
    name = chosen or entry.file
    if name:
        hits = [f for f in files if same_name(f.key, name)]
    elif len(zips) == 1:
        hits = zips
    else:
        hits = [f for f in zips if f.key.lower() in {f"{m}.zip" for m in entry.match}]
        hits = hits or [f for f in zips if any(m in f.key.lower() for m in entry.match)]
    if len(hits) == 1:
        return hits[0]
    what = f"no file {name!r}" if name else (f"{len(hits)} zips matching" if hits else "no zip matching")
    listing = ", ".join(f.key for f in files) or "no files"
    raise StoreError(
        f"Zenodo record {files[0].record if files else entry.record} has {what} {'' if name else list(entry.match)} "
        f"for the {entry.population} population of {zoo} (it holds: {listing}); choose one with "
        f"--file {entry.population}=NAME"
    )


def resolve(client: ZenodoClient, entry: PublishedZip, pin: int | None) -> ZenodoRecord:
    """The version to fetch: the pinned one, else the latest (through the concept, then known versions)."""
    if pin is not None:
        return client.version(pin, entry.record)
    return client.latest(entry.record, entry.versions)


def fetch_modelzoos(
    zoo: str,
    root: Path,
    downloads: Path,
    populations: Sequence[str] | None = None,
    files: dict[str, str] | None = None,
    progress: bool = True,
    client: ZenodoClient | None = None,
    revision: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Download and convert the published populations of ``zoo`` into ``root/<zoo>``; returns that folder.

    Verified Zenodo files are kept in ``downloads`` (shared by every store root), so a second store
    root converts the same zip without fetching it again. ``revision`` pins Zenodo version ids
    (:func:`pinned_versions`); without it each record's latest version is fetched."""
    from zoo_dataset.safe_extract import safe_extract

    from .ingest import ingest_original  # deferred: conversion code (torch, training data) only when needed
    from .vd_twins import convert_vd_folder, detect_epochs, twin_trials

    echo = echo or (lambda line: click.echo(line, err=True))
    entries = published(zoo)
    pins = pinned_versions(revision, list(entries))
    wanted = list(populations or entries)
    unpublished = [p for p in wanted if p not in entries]
    if unpublished:
        raise StoreUsageError(f"modelzoos.cc publishes the {', '.join(entries)} population(s) of {zoo}, not "
                         f"{', '.join(unpublished)}; build them with `zoo-build --zoo {zoo} --stages mp,vd` "
                         "on top of the downloaded originals")
    target = Path(root) / zoo
    if (target / MANIFEST).exists():
        present = {n for n, p in Manifest.load(target).populations.items() if p.status == "complete"}
    elif target.exists() and any(target.iterdir()):
        raise StoreError(f"{target} exists but holds no store (no {MANIFEST}); move it away or pass another --root")
    else:
        present = set()
    todo = [p for p in POPULATIONS if p not in present and (p in wanted or (p == "original" and "vd" in wanted))]
    if not todo:
        return target
    client = client or ZenodoClient(progress=progress)
    archives: dict[str, tuple[ZenodoFile, Path]] = {}
    concepts: dict[str, int] = {}
    for population in todo:
        entry = entries[population]
        record = resolve(client, entry, pins.get(population))
        chosen = choose_zip(record.files, entry, zoo, (files or {}).get(population))
        archives[population] = (chosen, client.download(chosen, downloads))
        concepts[population] = record.concept or entry.record
    spec = get_spec(zoo)
    if "vd" in entries:  # the published twins are the cnn_ard variant
        spec = spec.with_overrides(vd_variant="cnn_ard")
    with tempfile.TemporaryDirectory(prefix="zoo-modelzoos-", dir=_mkdir(root)) as tmp:
        twins = None
        if "vd" in archives:
            twins = safe_extract(archives["vd"][1], Path(tmp) / "vd")
            try:
                trials = twin_trials(twins)
            except DataFormatError:
                raise DataFormatError(f"{archives['vd'][0].key} (Zenodo record {archives['vd'][0].record}) holds "
                                      "no VD twin trial folders (params.json with model::type *_ARD)") from None
            spec = spec.with_overrides(vd_epochs=detect_epochs(trials, spec.vd.epochs + 1))
        zoo_dir = target
        if "original" in archives:  # a new store: assembled aside, renamed into place when complete
            staging = Path(tmp) / "store"
            ingest_original(spec, archives["original"][1], staging, echo=echo)
            zoo_dir = staging / zoo
        if twins is not None:
            for line in convert_vd_folder(twins, zoo_dir).lines(zoo):
                echo(line)
        record_origin(zoo_dir, client.base_url, {p: f for p, (f, _) in archives.items()}, concepts, revision)
        if zoo_dir != target:
            if target.exists():  # an empty folder (checked above)
                target.rmdir()
            zoo_dir.rename(target)
    return target


def record_origin(zoo_dir: Path, location: str, files: dict[str, ZenodoFile], concepts: dict[str, int],
                  revision: str | None) -> None:
    """The manifest names the source, the revision asked for, and every Zenodo file it came from: the
    concept record (what the DOI names), the version record actually fetched, name, size and md5."""
    manifest = Manifest.load(zoo_dir)
    known = dict(manifest.origin.get("files", {}))
    known.update({p: {"concept": concepts[p], "record": f.record, "doi": f"10.5281/zenodo.{f.record}",
                      "file": f.key, "size": f.size, "md5": f.md5} for p, f in files.items()})
    manifest.origin = {"source": SOURCE, "location": location, "revision": revision, "files": known}
    manifest.save(zoo_dir)


def _mkdir(path: Path) -> Path:
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)
