"""Reading a store: tables with pandas, states by (population, model, level, epoch).

One reader serves every consumer (loaders, analysis, builders) with three rules kept here only:
where a unit lives (:meth:`ZooStore.where`: population and model -> shard file and row, from the
manifest), which stored level a requested level is (:func:`level_index`), and which process owns
the open files (h5py handles and datasets are dropped and reopened after a fork, so a reader can
be shared with DataLoader workers). What is checked when (docs/store-format.md, "Guarantees"):
opening the store checks the manifest (its layout and arrays included) and the models table's
sha256; the first open of a shard checks that it is a regular file, its ``model_id`` and ``level``
datasets, arrays, shapes, stored chunks and packing digest against the manifest (and, with
``verify_checksums``, its size and sha256); every states table read is checked by sha256 and rows.
Every h5py call runs inside :class:`~zoo_dataset.hdf5_files.hdf5_errors`, so a damaged shard is
a StoreError whatever h5py raises.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from h5py import h5s, h5t
from torch import nn

from ..architectures import build_model
from ..errors import ChecksumError, StoreError
from ..hdf5_files import hdf5_errors, read_text
from ..layout import ParameterLayout
from ..specs import ModelConfig, ZooSpec
from .files import MAX_UNDECLARED_BYTES, check_file, read_checked, regular_size, sha256_file
from .layout_on_disk import CARD_FILE, CROISSANT_FILE, MODELS_TABLE, bench_files, card_data_files
from .manifest import MANIFEST, PACKING_DIGEST, Manifest, PopulationInfo, ShardInfo
from .paths import inside
from .tables import DIVERGED, FLOAT_ARRAYS, configs_from_table, diverged_states

CHUNK_CACHE_BYTES = 16 << 20
LEVEL_TOLERANCE = 1e-6  # levels are stored as float64 fractions; requests may come through float32
STATES_KEYS = ("model_id", "population", "level", "epoch")  # what identifies a states table's row
SHARD_KEYS = ("model_id", "level")  # a shard's datasets besides its arrays
PACKED_FOR_ANOTHER = "was packed for another manifest (its spec, layout, levels, epochs or arrays were changed since)"


def match_level(levels: list[float], level: float) -> int | None:
    """Position of ``level`` (a fraction) in ``levels``, or None: the one level-matching rule."""
    return next((i for i, lv in enumerate(levels) if abs(lv - float(level)) < LEVEL_TOLERANCE), None)


def _read_unit(dataset: h5py.Dataset, row: int, level_index: int, epoch: int | slice,
               boolean: bool | None = None) -> np.ndarray:
    """``dataset[row, level_index, epoch]`` of a ``[models, levels, states, P]`` array.

    Boolean arrays (masks, an HDF5 enum) are read as uint8 through h5py's low-level API: h5py's
    own bool conversion took ~150 us per state, 4x the decompression, and was the loader's largest
    cost. (Floats stay on h5py's indexing, which was faster than the low-level path for them.)
    ``boolean``: whether the dataset is boolean, when the caller knows (h5py's ``dtype`` costs ~10 us).
    """
    if not (dataset.dtype == np.bool_ if boolean is None else boolean):
        return dataset[row, level_index, epoch]
    n_states, size = dataset.shape[2], dataset.shape[3]
    if isinstance(epoch, slice):
        start, stop, step = epoch.indices(n_states)
        if step < 1:
            raise ValueError(f"epoch slices step forward, as in h5py (got step {step})")
        count = len(range(start, stop, step))
        shape: tuple[int, ...] = (count, size)
    else:
        start, step, count = range(n_states)[epoch], 1, 1
        shape = (size,)
    out = np.empty(shape, np.uint8)
    if count:
        file_space = dataset.id.get_space()
        file_space.select_hyperslab((row, level_index, start, 0), (1, 1, count, size), stride=(1, 1, step, 1))
        dataset.id.read(h5s.create_simple(shape), file_space, out, mtype=h5t.NATIVE_UINT8)
    return out.view(np.bool_)


def _all_chunks_stored(dataset: h5py.Dataset) -> bool:
    """Every chunk of a chunked dataset is in the file (milliseconds for thousands of chunks)."""
    if dataset.chunks is None:
        return True
    expected = int(np.prod([-(-n // c) for n, c in zip(dataset.shape, dataset.chunks, strict=True)]))
    return dataset.id.get_num_chunks() == expected


def check_states_table(table: pd.DataFrame, population: str, info: PopulationInfo,
                       model_ids: list[int]) -> str | None:
    """What is wrong with a shard's states table, or None: it must hold exactly one row per model,
    level and epoch of the shard (a duplicated row would shift properties by an epoch), the
    population's name, and finite sparsities (computed from the weights, never missing)."""
    if not set(STATES_KEYS) <= set(table.columns):
        return f"lacks the columns {sorted(set(STATES_KEYS) - set(table.columns))}"
    units, states = len(model_ids) * len(info.levels), info.epochs + 1
    stored_levels, level_rows = np.unique(table.level.to_numpy(np.float64), return_inverse=True)
    level_of = np.array([-1 if (i := match_level(info.levels, lv)) is None else i for lv in stored_levels])
    models, levels, epochs = table.model_id.to_numpy(), level_of[level_rows], table.epoch.to_numpy()
    order = np.lexsort((epochs, levels, models))  # sorted by unit, each unit's epochs must then run 0..E
    if (len(table) != units * states or set(models.tolist()) != set(model_ids) or (level_of < 0).any()
            or (table.population.to_numpy() != population).any()
            or len(np.unique(models * len(info.levels) + levels)) != units
            or not np.array_equal(epochs[order], np.tile(np.arange(states), units))):
        return "does not hold one row per model, level and epoch of its shard"
    if DIVERGED in table and table[DIVERGED].dtype != np.bool_:
        return f"holds a {DIVERGED} column that is not boolean"
    sparsities = [c for c in table.columns if c == "sparsity" or c.startswith("sparsity_")]
    if not all(np.isfinite(table[c].to_numpy(np.float64)).all() for c in sparsities):
        return f"holds non-finite values in {', '.join(sparsities)}"
    return None


def _levels_match(stored: np.ndarray, levels: list[float], models: int) -> bool:
    """A shard's ``level`` dataset holds the manifest's levels: [K] (schema 1) or one row per model (2)."""
    shape_ok = (stored.ndim == 1 and stored.shape == (len(levels),)) or stored.shape == (models, len(levels))
    return shape_ok and bool(np.all(np.abs(stored - np.asarray(levels)) < LEVEL_TOLERANCE))


class ZooStore:
    """A built (or downloaded) zoo: ``ZooStore(root / "digits_seed")``.

    Tables are pandas DataFrames and arrays numpy arrays (:meth:`array`, :meth:`weights`,
    :meth:`read`); the loaders' datasets serve the same values as torch tensors.
    ``verify_checksums`` hashes each shard on its first open in this process tree (about the cost
    of reading the file once); ``None`` turns it on for downloaded stores only.
    """

    def __init__(self, zoo_dir: Path | str, verify_checksums: bool | None = None):
        self.zoo_dir = Path(zoo_dir)
        self.manifest = Manifest.load(self.zoo_dir)
        try:
            self.layout: ParameterLayout = self.manifest.parameter_layout
            self.spec: ZooSpec = self.manifest.zoo_spec
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise StoreError(f"{self.zoo_dir / MANIFEST} is corrupt: its spec or layout is unreadable "
                             f"({type(exc).__name__})") from None
        self._configs: dict[int, ModelConfig] | None = None
        self._shards = {s.file: (name, s) for name, p in self.manifest.populations.items() for s in p.shards}
        self._checked: set[str] = set()  # shards whose contents matched the manifest (kept across forks)
        self._diverged: dict[str, np.ndarray] = {}  # shard -> diverged flags computed from its arrays
        self._packing_checked: set[str] = set()  # shards whose packing digest matched (states-only reads)
        if verify_checksums is None:  # a downloaded store (it records its origin) proves its shards once
            verify_checksums = bool(self.manifest.origin)
        self.verify_checksums = verify_checksums
        self._check_models_table()
        self._rows: dict[str, dict[int, tuple[str, int]]] = {}
        self._forget_handles()

    def _forget_handles(self) -> None:
        """h5py handles belong to the process that opened them; start afresh (init, fork, unpickle)."""
        self._handles: dict[str, h5py.File] = {}
        # (file, array) -> the dataset, whether it is boolean, its number of levels, and its shard's path
        self._datasets: dict[tuple[str, str], tuple[h5py.Dataset, bool, int, Path]] = {}
        self._pid = os.getpid()

    # ------------------------------------------------------------------ tables
    @property
    def populations(self) -> list[str]:
        return [name for name, p in self.manifest.populations.items() if p.shards]

    def population(self, name: str) -> PopulationInfo:
        info = self.manifest.populations.get(name)
        if info is None or not info.shards:
            have = ", ".join(self.populations) or "none"
            raise StoreError(f"population {name!r} is not in {self.zoo_dir} (it has: {have})")
        return info

    def models(self) -> pd.DataFrame:
        return self._table(MODELS_TABLE)

    def _check_models_table(self) -> None:
        path = self.zoo_dir / MODELS_TABLE
        if not path.is_file():
            raise StoreError(f"{path} is missing; re-download the store")
        expected = self.manifest.models_sha256
        if expected is not None and sha256_file(path, MAX_UNDECLARED_BYTES) != expected:
            raise ChecksumError(f"checksum mismatch for {path}: the models table was changed or damaged; "
                                "re-download the store")

    def states(self, population: str | None = None) -> pd.DataFrame:
        """One row per recorded state, across all finished shards of one or all populations."""
        names = [population] if population else self.populations
        frames = [self._states_table(n, s) for n in names for s in self.population(n).shards]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _states_table(self, population: str, shard: ShardInfo) -> pd.DataFrame:
        """One shard's states table, read once and checked on every read: its bytes against the
        manifest's sha256 and size, then its contents (:func:`check_states_table`)."""
        path = inside(self.zoo_dir, shard.states_file, "states table")
        try:
            data = read_checked(path, shard.states_sha256, shard.states_bytes)
        except FileNotFoundError:
            raise StoreError(f"{path} is missing; re-download the store or rebuild with zoo-build --resume") from None
        try:
            table = pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise StoreError(f"{path} is unreadable ({type(exc).__name__}); re-download or rebuild it") from None
        problem = check_states_table(table, population, self.manifest.populations[population], shard.model_ids)
        if problem:
            raise StoreError(f"{path} {problem}; re-download or rebuild it")
        self._check_packed_for(population, shard)
        if DIVERGED not in table:  # a table of an older toolkit: the flag from the shard's arrays
            table[DIVERGED] = self._diverged_from_arrays(population, shard, table)
        return table

    def _diverged_from_arrays(self, population: str, shard: ShardInfo, table: pd.DataFrame) -> np.ndarray:
        """The ``diverged`` flag of each row of a states table that lacks it, computed from the
        shard's arrays as the writer computes it (:func:`~.tables.diverged_states`); read once per
        shard and reader (the cost of one pass over the shard)."""
        if shard.file not in self._diverged:
            info, f = self.manifest.populations[population], self.open_shard(shard.file)
            flags = np.zeros((shard.rows, len(info.levels), info.epochs + 1), dtype=bool)
            with hdf5_errors(f.filename):
                for row in range(shard.rows):
                    for level in range(len(info.levels)):
                        arrays = {a: f[a][row, level] for a in info.arrays if a in FLOAT_ARRAYS}
                        flags[row, level] = diverged_states(arrays)
            self._diverged[shard.file] = flags
        rows = {m: r for r, m in enumerate(shard.model_ids)}
        levels = self.manifest.populations[population].levels
        return self._diverged[shard.file][table.model_id.map(rows).to_numpy(),
                                          [match_level(levels, lv) for lv in table.level],
                                          table.epoch.to_numpy()]

    def _check_packed_for(self, population: str, shard: ShardInfo) -> None:
        """A states table is served only beside the manifest its shard was packed for: reports that
        read no array (zoo-report's tables) would otherwise present an edited spec as the store's.
        Reads the shard's attribute only; a shard not on disk is left to the array reads."""
        if shard.file in self._checked or shard.file in self._packing_checked:
            return
        path = inside(self.zoo_dir, shard.file, "shard")
        if not path.exists():
            return
        regular_size(path)
        with hdf5_errors(path), h5py.File(path, "r") as f:
            digest = read_text(f.attrs.get(PACKING_DIGEST))
        if digest is not None and digest != self.manifest.packing_digest(population):
            raise StoreError(f"shard {path} {PACKED_FOR_ANOTHER}; re-download the store or rebuild it")
        self._packing_checked.add(shard.file)

    def _table(self, relative: str) -> pd.DataFrame:
        """A parquet table of the store; a missing or damaged one is a StoreError that says what to do."""
        path = self.zoo_dir / relative
        if not path.exists():
            raise StoreError(f"table {path} is missing; re-download the store or rebuild with zoo-build --resume")
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types (ArrowInvalid, OSError...) for a damaged file
            raise StoreError(f"table {path} is corrupt ({type(exc).__name__}); re-download or rebuild it") from None

    def model_configs(self) -> dict[int, ModelConfig]:
        """Generating factors of the store's models, by model id (from the models table)."""
        if self._configs is None:
            self._configs = configs_from_table(self.models())
        return self._configs

    def model_config(self, model_id: int) -> ModelConfig:
        configs = self.model_configs()
        if model_id not in configs:
            raise StoreError(f"model {model_id} is not in {self.zoo_dir} (it has {len(configs)} models)")
        return configs[model_id]

    # ------------------------------------------------------------------ arrays
    def open_shard(self, relative: str) -> h5py.File:
        """The open shard file ``relative`` to the zoo directory (one handle per process)."""
        if os.getpid() != self._pid:  # forked: h5py handles must not be shared
            self._forget_handles()
        if relative not in self._handles:
            if relative not in self._shards:
                raise StoreError(f"{relative} is not a shard the manifest of {self.zoo_dir} lists")
            path = inside(self.zoo_dir, relative, "shard")
            if not path.exists():
                raise StoreError(f"shard {path} is missing; re-download the store or rebuild with zoo-build --resume")
            population, shard = self._shards[relative]
            regular_size(path)  # a FIFO or device would block or never end
            if self.verify_checksums and relative not in self._checked:
                check_file(path, shard.sha256, shard.bytes)
            with hdf5_errors(path):
                f = h5py.File(path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
            if relative not in self._checked:
                try:
                    with hdf5_errors(path):
                        self._check_shard(f, population, shard)
                except BaseException:
                    f.close()
                    raise
                self._checked.add(relative)
            self._handles[relative] = f
        return self._handles[relative]

    def _check_shard(self, f: h5py.File, population: str, shard: ShardInfo) -> None:
        """The shard's own ids, levels, arrays and their shapes must be what the manifest says it
        holds, and the manifest the one it was packed for (its recorded digest, where it has one)."""
        info = self.manifest.populations[population]
        shape = (len(shard.model_ids), len(info.levels), info.epochs + 1, self.layout.num_params)
        ids = f["model_id"][()].tolist() if "model_id" in f else None
        levels = np.asarray(f["level"][()]) if "level" in f else np.empty(0)
        digest = read_text(f.attrs.get(PACKING_DIGEST))  # absent in shards of older toolkits
        stored = sorted(k for k in f if k not in SHARD_KEYS)
        problem = None
        if digest is not None and digest != self.manifest.packing_digest(population):
            problem = PACKED_FOR_ANOTHER
        elif stored != sorted(info.arrays):
            problem = f"holds the arrays {stored}, the manifest says {info.arrays}"
        elif ids != list(shard.model_ids):
            problem = f"holds models {ids}, the manifest says {shard.model_ids}"
        elif not _levels_match(levels, info.levels, len(ids)):
            problem = f"holds levels {levels.tolist()}, the manifest says {info.levels}"
        else:
            bad = [a for a in info.arrays if a not in f or f[a].shape != shape]
            missing = [a for a in info.arrays if a not in bad and not _all_chunks_stored(f[a])]
            if bad:
                problem = f"its {', '.join(bad)} array(s) lack the shape {shape}"
            elif missing:  # HDF5 would serve fill values (zeros) for those states
                problem = f"lacks chunks of its {', '.join(missing)} array(s)"
        if problem:
            raise StoreError(f"shard {f.filename} {problem}; re-download the store or rebuild it")

    def where(self, population: str, model_id: int) -> tuple[str, int]:
        """(shard file, row) of a model in a population: the one lookup rule, indexed once per reader."""
        rows = self._rows.get(population)
        if rows is None:
            info = self.population(population)
            rows = {m: (shard.file, row) for shard in info.shards for row, m in enumerate(shard.model_ids)}
            self._rows[population] = rows
        try:
            return rows[int(model_id)]
        except KeyError:
            raise StoreError(f"model {model_id} is not in any finished shard of population {population}") from None

    def level_index(self, population: str, level: float | None) -> int:
        """Index of ``level`` (a fraction) among the population's stored levels."""
        levels = self.population(population).levels
        if level is None:
            if len(levels) > 1:
                raise StoreError(f"population {population} has levels {levels}: pass level=")
            return 0
        index = match_level(levels, level)
        if index is None:
            raise StoreError(f"level {level} not in population {population} (levels: {levels})")
        return index

    def locate(self, population: str, model_id: int, level: float | None = None) -> tuple[h5py.File, int, int]:
        """(open shard, row, level index) of one unit."""
        file, row = self.where(population, model_id)
        return self.open_shard(file), row, self.level_index(population, level)

    def read(self, population: str, name: str, model_id: int, level_index: int, epoch: int | slice) -> np.ndarray:
        """The fast path: array ``name`` of one unit, the level given by index, no range checks.

        Loaders call it per item: going through :meth:`array` on every read cost about as much as
        the read itself. h5py datasets are opened once per shard, array and process.
        """
        file, row = self.where(population, model_id)
        known = self._datasets.get((file, name)) if os.getpid() == self._pid else None
        if known is None:
            shard, path = self.open_shard(file), self.zoo_dir / file
            with hdf5_errors(path):
                dataset = shard[name]
                known = self._datasets[(file, name)] = (dataset, dataset.dtype == np.bool_, dataset.shape[1], path)
        if not 0 <= level_index < known[2]:  # h5py would report it as a failed read, i.e. a corrupt shard
            raise StoreError(f"level index {level_index} out of range: population {population} has "
                             f"{known[2]} levels")
        with hdf5_errors(known[3]):  # e.g. a chunk that failed its zlib (adler32) check
            return _read_unit(known[0], row, level_index, epoch, known[1])

    def array(self, name: str, population: str, model_id: int, epoch: int | slice = -1,
              level: float | None = None) -> np.ndarray:
        """``weights``, ``masks`` or ``log_alpha`` of one unit at ``epoch`` (an int, -1 = last, or a slice),
        as a **numpy** array (``[P]``, or ``[states, P]`` for a slice), stored pruned or dense as the
        population stores it. The datasets (``zoo_twins.ZooTwinDataset``, ``ZooOriginalDataset``...)
        serve the same values as torch tensors: ``torch.from_numpy`` shares the memory."""
        f, row, li = self.locate(population, model_id, level)
        if name not in self.population(population).arrays:  # the shard's arrays were checked on its open
            raise StoreError(f"population {population} stores no {name!r} (it has "
                             f"{', '.join(self.population(population).arrays)})")
        with hdf5_errors(f.filename):
            n_states = f[name].shape[2]
        if isinstance(epoch, int) and not -n_states <= epoch < n_states:
            raise StoreError(f"epoch {epoch} out of range: population {population} records epochs 0..{n_states - 1}")
        return self.read(population, name, model_id, li, epoch)

    def weights(self, population: str, model_id: int, epoch: int | slice = -1,
                level: float | None = None) -> np.ndarray:
        """The stored weights of one unit as a **numpy** array (see :meth:`array`)."""
        return self.array("weights", population, model_id, epoch, level)

    def model(self, population: str, model_id: int, epoch: int = -1, level: float | None = None) -> nn.Module:
        """A plain ``nn.Module`` carrying a stored state (pruned entries as exact zeros), in eval mode."""
        config = self.model_config(model_id)
        channels = self.layout.by_name["conv1.weight"].shape[1]
        net = build_model(self.spec.architecture, channels, config.activation, config.dropout)
        flat = self.weights(population, model_id, epoch, level)
        if "masks" in self.population(population).arrays:
            flat = np.where(self.array("masks", population, model_id, epoch, level), flat, 0.0)
        return self.layout.load_into(net, flat).eval()

    # ------------------------------------------------------------------ integrity
    def verify(self) -> list[str]:
        """Check every file of the store: each shard and states table against the manifest's sha256,
        the models table against its recorded sha256 (older stores: that it lists every model), each
        shard's and table's contents against the manifest, and every file the card offers (README.md,
        croissant.json, the parquet configs under data/, the benchmark's files under bench/) against the
        manifest's ``card_files``.
        Raises StoreError / ChecksumError; returns what it could not check, one line each (a card
        written before the manifest recorded its files)."""
        unchecked = self._verify_card_files()
        self._check_models_table()
        if not set(self.manifest.model_ids) <= set(self.models().model_id.astype(int)):
            raise StoreError(f"{self.zoo_dir / MODELS_TABLE} does not list every model of the manifest")
        for name in self.populations:
            for shard in self.population(name).shards:
                for rel, expected, size in ((shard.file, shard.sha256, shard.bytes),
                                            (shard.states_file, shard.states_sha256, shard.states_bytes)):
                    path = inside(self.zoo_dir, rel, "shard entry")
                    if not path.exists():
                        raise StoreError(f"{path} is missing; re-download the store")
                    check_file(path, expected, size)
                self.open_shard(shard.file)
                self._states_table(name, shard)
        return unchecked

    def _verify_card_files(self) -> list[str]:
        """Each file of ``card_files`` must be present with its size and sha256, and no parquet file
        under data/ may be missing from it (a Croissant reader takes in data/<config>/*.parquet).
        A manifest without ``card_files`` (a card of an older toolkit) leaves the card unchecked."""
        listed = self.manifest.card_files
        present = [f for f in (CARD_FILE, CROISSANT_FILE) if (self.zoo_dir / f).exists()]
        present += card_data_files(self.zoo_dir) + bench_files(self.zoo_dir)
        if listed is None:
            if not present:
                return []
            return [f"the card's files ({', '.join(present[:3])}{', ...' if len(present) > 3 else ''}) are not in "
                    f"the manifest (a card written by an older toolkit): unchecked; rewrite the card with "
                    f"`zoo-build --zoo {self.manifest.zoo} --stages card` to have them checked"]
        unlisted = sorted(set(card_data_files(self.zoo_dir)) - set(listed))
        if unlisted:
            raise StoreError(f"{self.zoo_dir / unlisted[0]} is not a file the manifest lists for the card "
                             "(a Croissant reader would take it in); remove it or rewrite the card")
        for relative, entry in listed.items():
            path = inside(self.zoo_dir, relative, "card file")
            if not path.exists():
                raise StoreError(f"{path}, a file of the card, is missing; re-download the store or rewrite the card")
            check_file(path, entry.sha256, entry.bytes)
        stray = sorted(set(bench_files(self.zoo_dir)) - set(listed))
        if stray:  # a benchmark run stopped before it entered its files: they are not the card's
            return [f"benchmark files not in the manifest, unchecked: {', '.join(stray[:3])}"
                    f"{', ...' if len(stray) > 3 else ''} (rerun zoo-bench, or rewrite the card to enter them)"]
        return []

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._forget_handles()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"], state["_datasets"] = {}, {}  # h5py objects never cross processes
        return state

    def __repr__(self) -> str:
        return f"ZooStore({self.zoo_dir}, populations={self.populations})"
