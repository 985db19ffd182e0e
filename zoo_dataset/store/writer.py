"""Writing a store: stage finished units, pack complete shards, update the manifest last.

Each finished unit (a model, or a model at one MP level) is written at once to its own small
staging file (atomically), so a killed build loses at most the unit in flight. When every unit of
a shard is staged, the shard and its states table are written under temporary names, renamed,
entered in the manifest, and only then are the staging files removed. A reader therefore never
sees a half-written shard, and a resumed build redoes nothing that finished.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..errors import StoreError, StoreUsageError
from ..jobs import JobResult, UnitKey
from ..layout import ParameterLayout
from ..methods import methods
from ..specs import ZooSpec
from .files import atomic_path, file_matches, remove_stale_tmp, sha256_file
from .layout_on_disk import MODELS_TABLE, STAGING, shard_name, states_name, unit_path
from .manifest import PACKING_DIGEST, SCHEMA_VERSION, Manifest, PopulationInfo, ShardInfo
from .paths import check_writable, check_zoo_name
from .tables import models_table

# gzip's zlib stream ends in an adler32 of the chunk, which HDF5 checks on every read: a flipped chunk
# raises. (HDF5's fletcher32 filter on top corrupted the heap on multi-chunk reads with h5py 3.16 /
# HDF5 2.0.0, so it is not used; docs/store-format.md.)
COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
SHARD_LIBVER = "v110"  # HDF5 1.10 formats: checksummed object headers and chunk indexes


def store_folders() -> list[str]:
    """Where a store writes files: one folder per method's population (and its staging), and
    data/<config> for the card stage's Hub tables."""
    return ["", *methods(), *(f"{STAGING}/{p}" for p in methods()), "data/*"]


def changed_settings(recorded: ZooSpec, wanted: ZooSpec) -> list[str]:
    """The settings (``vd.variant``, ``epochs``...) in which ``wanted`` differs from the store's spec.

    Both are compared as parsed specs, so a spec an older toolkit recorded (e.g. ``vd.kl_objective``
    before ``vd.variant``) compares by what it means. Where the spec was read from is provenance,
    not a setting: a moved spec file may resume."""
    def settings(spec: ZooSpec) -> dict:
        return json.loads(json.dumps(spec.to_dict()))  # tuples -> lists

    old, new = settings(recorded), settings(wanted)
    changed = []
    for key in sorted(new.keys() - {"source"}):
        if isinstance(new[key], dict) and isinstance(old.get(key), dict):
            changed += [f"{key}.{sub}" for sub in sorted(new[key]) if old[key].get(sub) != new[key][sub]]
        elif old.get(key) != new[key]:
            changed.append(key)
    return changed


class StoreWriter:
    """Creates or reopens the store of one zoo under ``root/<zoo>``."""

    def __init__(self, zoo_dir: Path, manifest: Manifest, resume: bool = False):
        self.zoo_dir = Path(zoo_dir)
        self.manifest = manifest
        self.resume = resume

    @classmethod
    def open(cls, root: Path, spec: ZooSpec, layout: ParameterLayout, resume: bool, create: bool = True,
             train_chunk: int | None = None) -> StoreWriter:
        """The store of ``spec`` under ``root``: existing (same spec required) or, with ``create``, new
        (training chunks of ``train_chunk`` models, default ``models_per_shard``).

        ``resume`` allows continuing populations that already hold work; new populations can be
        added to an existing store without it (e.g. ``--stages mp`` after ``--stages original``).
        The caller holds the store's writer lock (:func:`~.lock.writer_lock`).
        """
        zoo_dir = check_writable(Path(root) / check_zoo_name(spec.name))
        if (zoo_dir / "manifest.json").exists():
            manifest = Manifest.load(zoo_dir)
            if manifest.schema_version != SCHEMA_VERSION:
                raise StoreError(
                    f"{zoo_dir} has store schema {manifest.schema_version}; convert it first with "
                    f"`zoo-build --migrate --zoo {spec.name} --out {root}` (lossless), then build on"
                )
            changed = changed_settings(manifest.zoo_spec, spec)
            if changed:
                raise StoreUsageError(
                    f"{zoo_dir} was built with different settings ({', '.join(changed)}); "
                    "use the same options, or another --root"
                )
            remove_stale_tmp(zoo_dir, store_folders())
            return cls(zoo_dir, manifest, resume)
        if not create:
            raise StoreError(
                f"no store of {spec.name} under {root}: build its original population first "
                f"(zoo-build --zoo {spec.name} --stages original, or --from-original PATH)"
            )
        manifest = Manifest(
            zoo=spec.name,
            spec=spec.to_dict(),
            layout=layout.to_dict(),
            model_ids=[m.model_id for m in spec.models()],
            models_per_shard=spec.models_per_shard,
            # a chunk completes a shard, so a resume redoes at most one; a GPU build asks for its group size
            train_chunk=train_chunk or spec.models_per_shard,
        )
        writer = cls(zoo_dir, manifest, resume)
        writer.write_models_table(models_table(spec))
        return writer

    def write_models_table(self, table: pd.DataFrame) -> None:
        """Write ``models.parquet`` and record its sha256 in the manifest (which is saved)."""
        path = self.zoo_dir / MODELS_TABLE
        with atomic_path(path) as tmp:
            table.to_parquet(tmp, index=False)
        self.manifest.models_sha256 = sha256_file(path)
        self.manifest.save(self.zoo_dir)

    def record_seeds(self, seeds: dict[int, int]) -> None:
        """Replace the models table's seeds of some models (ingest: the seeds a published zoo used)."""
        table = pd.read_parquet(self.zoo_dir / MODELS_TABLE)
        table["seed"] = [int(seeds.get(m, s)) for m, s in zip(table.model_id, table.seed, strict=True)]
        self.write_models_table(table)

    def record_model_flags(self, column: str, flags: dict[int, bool | None]) -> None:
        """Set a yes/no column of the models table (ingest: what was found reading a published model);
        models not in ``flags``, or None there, hold NA."""
        table = pd.read_parquet(self.zoo_dir / MODELS_TABLE)
        table[column] = pd.array([flags.get(int(m)) for m in table.model_id], dtype="boolean")
        self.write_models_table(table)

    def population(self, name: str, levels: list[float], epochs: int, arrays: list[str],
                   generator: str) -> PopulationWriter:
        """The writer of population ``name``, trained with the random ``generator`` (name/version).

        A partial population started with another generator is refused: its finished and its
        remaining units would draw from different streams.
        """
        info = self.manifest.populations.get(name)
        if info is None:
            info = PopulationInfo(levels=[float(x) for x in levels], epochs=epochs, arrays=arrays, generator=generator)
            self.manifest.populations[name] = info
            self.manifest.save(self.zoo_dir)
        elif info.levels != [float(x) for x in levels] or info.epochs != epochs:
            raise StoreUsageError(f"population {name} in {self.zoo_dir} was started with other levels or epochs")
        elif not self.resume and _has_work(self.zoo_dir, name, info):
            raise StoreUsageError(
                f"population {name} of {self.zoo_dir} already holds a build; pass --resume to continue it "
                "or choose another --root"
            )
        elif info.generator != generator and info.status != "complete":
            if _has_work(self.zoo_dir, name, info):
                started = info.generator or "per-model Mersenne Twister generators (an older toolkit)"
                raise StoreError(
                    f"population {name} of {self.zoo_dir} was started with the random generator {started}; "
                    f"this toolkit draws with {generator}: finish it with the version that started it, "
                    "or build into another --root"
                )
            info.generator = generator
            self.manifest.save(self.zoo_dir)
        writer = PopulationWriter(self, name, info)
        if self.resume:
            writer.drop_damaged_shards()
        return writer


class PopulationWriter:
    """Stages units of one population and packs them into shards."""

    def __init__(self, store: StoreWriter, name: str, info: PopulationInfo):
        self.store, self.name, self.info = store, name, info
        self.dropped: list[str] = []  # shards a resume found damaged and will rebuild

    @property
    def zoo_dir(self) -> Path:
        return self.store.zoo_dir

    def drop_damaged_shards(self) -> list[str]:
        """Forget listed shards whose files are missing or fail their sha256, so a resume retrains
        their models (the repair the reader advises); returns one line per shard dropped."""
        dropped = []
        for shard in list(self.info.shards):
            for rel, expected, size in ((shard.file, shard.sha256, shard.bytes),
                                        (shard.states_file, shard.states_sha256, shard.states_bytes)):
                if not file_matches(self.zoo_dir / rel, expected, size):
                    dropped.append(f"{self.name} shard {shard.index}: {rel} is missing or damaged")
                    self.info.shards.remove(shard)
                    break
        if dropped:
            self.info.status = "partial"
            self.store.manifest.save(self.zoo_dir)
        self.dropped = dropped
        return dropped

    def packed_models(self) -> set[int]:
        return {m for s in self.info.shards for m in s.model_ids}

    def is_done(self, key: UnitKey) -> bool:
        return key.model_id in self.packed_models() or unit_path(self.zoo_dir, self.name, *_key(key)).exists()

    def stage(self, result: JobResult) -> None:
        """Write one finished unit to its staging file (atomic), then pack any complete shard."""
        with atomic_path(unit_path(self.zoo_dir, self.name, *_key(result.key))) as tmp, h5py.File(tmp, "w") as f:
            f["weights"] = result.weights.astype(np.float32)
            if result.masks is not None:
                f["masks"] = result.masks.astype(bool)
            if result.log_alpha is not None:
                f["log_alpha"] = result.log_alpha.astype(np.float32)
            f.attrs["metrics"] = json.dumps(result.metrics)
        self.pack_ready()

    def pack_ready(self) -> list[int]:
        """Pack every shard whose units are all staged; returns the indices packed."""
        packed = []
        done = {s.index for s in self.info.shards}
        for index, model_ids in enumerate(self.store.manifest.shard_groups()):
            if index in done:
                continue
            units = [unit_path(self.zoo_dir, self.name, m, lv) for m in model_ids for lv in self.info.levels]
            if all(u.exists() for u in units):
                self._pack(index, model_ids)
                packed.append(index)
        if len(self.info.shards) == len(self.store.manifest.shard_groups()) and self.info.status != "complete":
            self.info.status = "complete"
            self.store.manifest.save(self.zoo_dir)
            _remove_empty_dirs(self.zoo_dir / STAGING / self.name, self.zoo_dir / STAGING)
        return packed

    def _pack(self, index: int, model_ids: list[int]) -> None:
        levels, epochs = self.info.levels, self.info.epochs
        n_states, n_params = epochs + 1, len(self.store.manifest.parameter_layout.weight_mask())
        shape = (len(model_ids), len(levels), n_states, n_params)
        chunks = (1, 1, 1, n_params)  # one state per chunk: random single-state reads dominate
        rows = []
        shard_path = self.zoo_dir / shard_name(self.name, index)
        with atomic_path(shard_path) as tmp, h5py.File(tmp, "w", libver=SHARD_LIBVER) as out:
            out.attrs.update(shard_attrs(self.store.manifest, self.name))
            out["model_id"] = np.asarray(model_ids, dtype=np.int64)  # checked against the manifest on open
            out["level"] = level_rows(levels, len(model_ids))
            dtypes = {"weights": np.float32, "masks": bool, "log_alpha": np.float32}
            datasets = {a: out.create_dataset(a, shape=shape, dtype=dtypes[a], chunks=chunks, **COMPRESSION)
                        for a in self.info.arrays}
            for row, model_id in enumerate(model_ids):
                for li, level in enumerate(levels):
                    with h5py.File(unit_path(self.zoo_dir, self.name, model_id, level), "r") as unit:
                        for name, ds in datasets.items():
                            ds[row, li] = unit[name][()]
                        for m in json.loads(unit.attrs["metrics"]):
                            rows.append({"model_id": model_id, "population": self.name, "level": level, **m,
                                         "shard": index, "row": row})
        states_path = self.zoo_dir / states_name(self.name, index)
        with atomic_path(states_path) as tmp:
            pd.DataFrame(rows).to_parquet(tmp, index=False)
        self.info.shards.append(ShardInfo(
            index=index, file=shard_name(self.name, index), sha256=sha256_file(shard_path),
            bytes=shard_path.stat().st_size, model_ids=list(model_ids),
            states_file=states_name(self.name, index), states_sha256=sha256_file(states_path),
            states_bytes=states_path.stat().st_size,
        ))
        self.info.shards.sort(key=lambda s: s.index)
        self.store.manifest.save(self.zoo_dir)
        for model_id in model_ids:  # only now is the staged work redundant
            for level in levels:
                unit_path(self.zoo_dir, self.name, model_id, level).unlink()


def shard_attrs(manifest: Manifest, population: str) -> dict[str, object]:
    """A shard's attributes: what it holds, and the manifest digest readers check it against."""
    info = manifest.populations[population]
    return {"population": population, "levels": info.levels, "epochs": info.epochs, "schema_version": SCHEMA_VERSION,
            PACKING_DIGEST: manifest.packing_digest(population)}


def level_rows(levels: list[float], rows: int) -> np.ndarray:
    """The ``level`` dataset: [models, levels], one row per model, so that every dataset of a shard
    is row-aligned and ``datasets.load_dataset("hdf5", ...)`` reads the shard as it is."""
    return np.tile(np.asarray(levels, dtype=np.float64), (rows, 1))


def _key(key: UnitKey) -> tuple[int, float]:
    return key.model_id, float(key.level)


def _remove_empty_dirs(*directories: Path) -> None:
    """A finished build leaves no empty staging folders behind."""
    for directory in directories:
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()


def _has_work(zoo_dir: Path, population: str, info: PopulationInfo) -> bool:
    staging = zoo_dir / STAGING / population
    return bool(info.shards) or (staging.exists() and any(staging.glob("*.h5")))
