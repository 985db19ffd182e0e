"""PyTorch datasets over a store: twin pairs at one epoch, and whole twin trajectories.

Shard files open lazily in whichever process reads them (the store reader reopens its h5py
handles after a fork), so both datasets work with ``DataLoader(num_workers>0)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from zoo_dataset.errors import StoreError
from zoo_dataset.store.reader import read_unit

from .resolve import open_store
from .twins import TwinIndex
from .views import make_view

Item = dict[str, Any]


class _TwinDatasetBase(Dataset):
    """Shared set-up: open the store, choose the units, build the weight view."""

    def __init__(
        self,
        zoo: str | Path,
        method: str,
        level: float | None,
        split: str | None,
        root: str | Path | None,
        download: bool,
        view: str,
        transform: Callable[[Item], Any] | None,
        apply_mask: bool,
    ):
        self.store = open_store(zoo, root, download, populations=("original", method))
        self.apply_mask = apply_mask
        self.index = TwinIndex(self.store, method, level, split)
        self.method = method
        self.view = make_view(view, self.store.layout)
        self.transform = transform
        self._arrays = self.store.population(method).arrays
        self._where = {  # (population, model) -> (shard file, row): no manifest search per read
            (p, m): (shard.file, row)
            for p in ("original", method)
            for shard in self.store.population(p).shards
            for row, m in enumerate(shard.model_ids)
        }
        self._level_index = {round(lv, 6): i for i, lv in enumerate(self.store.population(method).levels)}
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        """h5py objects and caches belong to one process; a forked DataLoader worker starts afresh."""
        self._shards: dict[str, dict[str, h5py.Dataset]] = {}
        self._originals: dict[int, torch.Tensor] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.index.units)

    @property
    def model_ids(self) -> list[int]:
        return self.index.model_ids

    def _twin_arrays(self, model_id: int, level: float, epoch: int | slice) -> dict[str, torch.Tensor]:
        """Twin weights (pruned entries as exact zeros unless ``apply_mask`` is off), mask, (VD) log-alpha."""
        arrays, row = self._locate(self.method, model_id)
        li = self._level_index[round(level, 6)]
        read = {name: torch.from_numpy(self._read(arrays[name], row, li, epoch)) for name in self._arrays}
        if "masks" in read and self.apply_mask:
            read["weights"].masked_fill_(~read["masks"], 0.0)
        out = {"twin": self.view(read["weights"])}
        if "masks" in read:
            out["mask"] = self.view(read["masks"])
        if "log_alpha" in read:
            out["log_alpha"] = self.view(read["log_alpha"])
        return out

    def _original(self, model_id: int) -> torch.Tensor:
        """The original's final state, read once per process: every level and epoch of a model shares it."""
        if model_id not in self._originals:
            arrays, row = self._locate("original", model_id)
            self._originals[model_id] = torch.from_numpy(self._read(arrays["weights"], row, 0, -1))
        return self.view(self._originals[model_id].clone())  # a copy: transforms may work in place

    @staticmethod
    def _read(dataset: h5py.Dataset, row: int, level_index: int, epoch: int | slice) -> np.ndarray:
        try:
            return read_unit(dataset, row, level_index, epoch)
        except OSError as exc:  # a damaged chunk (h5py names neither file nor cure)
            raise StoreError(f"shard {dataset.file.filename} is corrupt ({exc}); re-download or rebuild it") from None

    def _locate(self, population: str, model_id: int) -> tuple[dict[str, h5py.Dataset], int]:
        """The h5py datasets of the unit's shard (opened once per shard and process) and its row.

        Going through ``ZooStore.array`` on every read costs about as much as the read itself;
        the store still owns the file handles (and reopens them after a fork).
        """
        if os.getpid() != self._pid:
            self._reset_process_state()
        file, row = self._where[(population, model_id)]
        if file not in self._shards:
            f = self.store.open_shard(file)
            self._shards[file] = {name: f[name] for name in self.store.population(population).arrays}
        return self._shards[file], row

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_shards"], state["_originals"] = {}, {}  # h5py objects never cross processes
        return state

    def _props(self, values: np.ndarray) -> dict[str, torch.Tensor]:
        columns = torch.from_numpy(values.copy()).unbind(-1)  # one tensor per property, one copy in all
        return dict(zip(self.index.property_names, columns, strict=True))

    def _header(self, model_id: int, level: float) -> Item:
        return {
            "model_id": torch.tensor(model_id),
            "level": torch.tensor(level, dtype=torch.float32),
            "factors": dict(self.index.factors[model_id]),
            "original_properties": self._props(self.index.properties("original", model_id, 0.0)[-1]),
        }

    def _finish(self, item: Item) -> Any:
        return self.transform(item) if self.transform is not None else item


class ZooTwinDataset(_TwinDatasetBase):
    """One item per (model, twin): the original's final state and the twin at ``epoch``.

    ``ZooTwinDataset("digits_seed", method="mp", level=None, split="train", epoch=-1, root="stores")``.
    An item is a dict: ``model_id``, ``level``, ``epoch``, ``original`` and ``twin`` weights in the
    chosen view (twin weights with pruned entries as zeros), ``mask``, ``log_alpha`` (VD),
    ``original_properties`` / ``twin_properties`` (accuracies, ggap, sparsity per layer,
    agreement...), and ``factors`` (seed, activation, optimizer...).

    ``apply_mask=False`` serves the twin weights as trained instead: for VD the dense mean weights
    (entries with ``log_alpha >= threshold`` not zeroed), the input of the paper's
    hyper-representation autoencoder; MP weights are stored pruned, so they are the same either way.
    """

    def __init__(
        self,
        zoo: str | Path,
        method: str = "mp",
        level: float | None = None,
        split: str | None = "train",
        epoch: int = -1,
        root: str | Path | None = None,
        download: bool = False,
        view: str = "flat",
        transform: Callable[[Item], Any] | None = None,
        apply_mask: bool = True,
    ):
        super().__init__(zoo, method, level, split, root, download, view, transform, apply_mask)
        self.epoch = self.index.resolve_epoch(epoch)

    def __getitem__(self, i: int) -> Any:
        model_id, level = self.index.units[i]
        item = self._header(model_id, level)
        item["epoch"] = torch.tensor(self.epoch)
        item["original"] = self._original(model_id)
        item.update(self._twin_arrays(model_id, level, self.epoch))
        item["twin_properties"] = self._props(self.index.properties(self.method, model_id, level)[self.epoch])
        return self._finish(item)


class ZooTrajectoryDataset(_TwinDatasetBase):
    """One item per twin with every recorded epoch stacked: ``twin`` [E+1, ...], ``mask``,
    ``log_alpha`` (VD), ``twin_properties`` [E+1] per property, plus the original's final state.
    ``apply_mask`` as in :class:`ZooTwinDataset`."""

    def __init__(
        self,
        zoo: str | Path,
        method: str = "mp",
        level: float | None = None,
        split: str | None = "train",
        root: str | Path | None = None,
        download: bool = False,
        view: str = "flat",
        transform: Callable[[Item], Any] | None = None,
        apply_mask: bool = True,
    ):
        super().__init__(zoo, method, level, split, root, download, view, transform, apply_mask)

    def __getitem__(self, i: int) -> Any:
        model_id, level = self.index.units[i]
        item = self._header(model_id, level)
        item["epoch"] = torch.arange(self.index.num_states)
        item["original"] = self._original(model_id)
        item.update(self._twin_arrays(model_id, level, slice(None)))
        item["twin_properties"] = self._props(self.index.properties(self.method, model_id, level))
        return self._finish(item)
