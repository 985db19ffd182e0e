"""Reading a store: tables with pandas, states by (population, model, level, epoch).

One reader serves every consumer (loaders, analysis, builders) with three rules kept here only:
where a unit lives (:meth:`ZooStore.where`: population and model -> shard file and row, from the
manifest), which stored level a requested level is (:func:`level_index`), and which process owns
the open files (h5py handles and datasets are dropped and reopened after a fork, so a reader can
be shared with DataLoader workers).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from h5py import h5s, h5t
from torch import nn

from ..architectures import build_model
from ..errors import ChecksumError, StoreError
from ..layout import ParameterLayout
from ..specs import ModelConfig, ZooSpec
from .files import sha256_file
from .layout_on_disk import MODELS_TABLE
from .manifest import MANIFEST, Manifest, PopulationInfo
from .tables import configs_from_table

CHUNK_CACHE_BYTES = 16 << 20
LEVEL_TOLERANCE = 1e-6  # levels are stored as float64 fractions; requests may come through float32


def match_level(levels: list[float], level: float) -> int | None:
    """Position of ``level`` (a fraction) in ``levels``, or None: the one level-matching rule."""
    return next((i for i, lv in enumerate(levels) if abs(lv - float(level)) < LEVEL_TOLERANCE), None)


def _read_unit(dataset: h5py.Dataset, row: int, level_index: int, epoch: int | slice) -> np.ndarray:
    """``dataset[row, level_index, epoch]`` of a ``[models, levels, states, P]`` array.

    Boolean arrays (masks, an HDF5 enum) are read as uint8 through h5py's low-level API: h5py's
    own bool conversion took ~150 us per state, 4x the decompression, and was the loader's largest
    cost. (Floats stay on h5py's indexing, which was faster than the low-level path for them.)
    """
    if dataset.dtype != np.bool_:
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


class ZooStore:
    """A built (or downloaded) zoo: ``ZooStore(root / "digits_seed")``."""

    def __init__(self, zoo_dir: Path | str):
        self.zoo_dir = Path(zoo_dir)
        self.manifest = Manifest.load(self.zoo_dir)
        try:
            self.layout: ParameterLayout = self.manifest.parameter_layout
            self.spec: ZooSpec = self.manifest.zoo_spec
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise StoreError(f"{self.zoo_dir / MANIFEST} is corrupt: its spec or layout is unreadable "
                             f"({type(exc).__name__})") from None
        self._configs: dict[int, ModelConfig] | None = None
        self._rows: dict[str, dict[int, tuple[str, int]]] = {}
        self._forget_handles()

    def _forget_handles(self) -> None:
        """h5py handles belong to the process that opened them; start afresh (init, fork, unpickle)."""
        self._handles: dict[str, h5py.File] = {}
        self._datasets: dict[tuple[str, str], h5py.Dataset] = {}
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

    def states(self, population: str | None = None) -> pd.DataFrame:
        """One row per recorded state, across all finished shards of one or all populations."""
        names = [population] if population else self.populations
        frames = [self._table(s.states_file) for n in names for s in self.population(n).shards]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

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
            path = self.zoo_dir / relative
            if not path.exists():
                raise StoreError(f"shard {path} is missing; re-download the store or rebuild with zoo-build --resume")
            try:
                self._handles[relative] = h5py.File(path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
            except OSError as exc:
                raise StoreError(f"shard {path} is corrupt or truncated ({exc}); re-download or rebuild it") from exc
        return self._handles[relative]

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
        dataset = self._datasets.get((file, name)) if os.getpid() == self._pid else None
        if dataset is None:
            dataset = self._datasets[(file, name)] = self.open_shard(file)[name]
        try:
            return _read_unit(dataset, row, level_index, epoch)
        except OSError as exc:  # a damaged chunk: h5py names neither the file nor the cure
            raise StoreError(f"shard {self.zoo_dir / file} is corrupt ({exc}); re-download or rebuild it") from None

    def array(self, name: str, population: str, model_id: int, epoch: int | slice = -1,
              level: float | None = None) -> np.ndarray:
        """``weights``, ``masks`` or ``log_alpha`` of one unit at ``epoch`` (an int, -1 = last, or a slice)."""
        f, row, li = self.locate(population, model_id, level)
        if name not in f:
            stored = ", ".join(k for k in f if k not in ("model_id", "level"))
            raise StoreError(f"population {population} stores no {name!r} (it has {stored})")
        n_states = f[name].shape[2]
        if isinstance(epoch, int) and not -n_states <= epoch < n_states:
            raise StoreError(f"epoch {epoch} out of range: population {population} records epochs 0..{n_states - 1}")
        return self.read(population, name, model_id, li, epoch)

    def weights(self, population: str, model_id: int, epoch: int = -1, level: float | None = None) -> np.ndarray:
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
    def verify(self) -> None:
        """Check every listed file against the manifest's sha256; raises ChecksumError."""
        for name in self.populations:
            for shard in self.population(name).shards:
                for rel, expected in ((shard.file, shard.sha256), (shard.states_file, shard.states_sha256)):
                    path = self.zoo_dir / rel
                    if not path.exists():
                        raise StoreError(f"{path} is missing; re-download the store")
                    if sha256_file(path) != expected:
                        raise ChecksumError(f"checksum mismatch for {path}: the file is corrupt; re-download it")

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
