"""PyTorch datasets over a store: twin pairs at one epoch, and whole twin trajectories.

Both are one implementation (:class:`_TwinDataset`) that differs only in the epochs an item
holds: one (``ZooTwinDataset``) or all (``ZooTrajectoryDataset``). Reads go through the store
reader's fast path (:meth:`ZooStore.read`), which owns the file handles and reopens them after a
fork, so both datasets work with ``DataLoader(num_workers>0)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .items import ITEM_SCHEMA
from .resolve import open_store
from .twins import TwinIndex
from .views import make_view

Item = dict[str, Any]

ARGUMENTS = """
    Args:
        zoo: a zoo name (looked up as ``<root>/<zoo>``) or the path of a store directory.
        method: the twins to serve: ``"mp"`` (magnitude pruning) or ``"vd"`` (variational dropout).
        level: the sparsity level of MP twins as a fraction or percent (``0.5`` or ``50``);
            ``None`` serves every stored level (one item per model and level). VD has one level.
        split: ``"train"``, ``"val"`` or ``"test"`` (by model, fixed when the store was built),
            or ``None`` for every model.
        root: the folder holding stores by zoo name (default: the store root every command uses,
            ``$ZOO_TWINS_CACHE``, else the cache directory).
        download: fetch the store, or the populations it lacks (only the original and ``method``
            populations), from ``source``; a store that holds them is used offline.
        view: how a state is shaped: ``"flat"`` ([P]), ``"layers"`` (per-layer tensors in module
            shapes) or ``"tokens"`` (one token per output neuron); see ``loaders.views``.
        transform: called with each item dict (after ``target_transform``); its result is the item.
        target_transform: called with ``twin_properties`` (the usual prediction targets); its
            result replaces them in the item.
        apply_mask: serve twin weights with pruned entries zeroed (True), or as trained (False:
            for VD the dense mean weights, the input of the paper's hyper-representation).
        source: where ``download`` fetches from: ``"hub"`` (Hugging Face Hub), ``"modelzoos"``
            (the published Model Zoos on Zenodo, converted), a mirror URL or a local path;
            default ``$ZOO_TWINS_SOURCE``, else ``"hub"``.
        revision: the Hub revision (branch, tag or commit) ``download`` fetches.
"""


class _TwinDataset(Dataset):
    """Items of (original, twin) pairs; ``epochs`` is one resolved epoch (int) or every epoch (slice)."""

    schema = ITEM_SCHEMA

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
        target_transform: Callable[[dict[str, torch.Tensor]], Any] | None,
        apply_mask: bool,
        epoch: int | None,
        source: str | None = None,
        revision: str | None = None,
    ):
        self.store = open_store(zoo, root, download, ("original", method), source, revision)
        self.index = TwinIndex(self.store, method, level, split)
        self.method, self.split = method, split
        self.epochs: int | slice = slice(None) if epoch is None else self.index.resolve_epoch(epoch)
        self.view_name = view
        self.view = make_view(view, self.store.layout)
        self.transform, self.target_transform = transform, target_transform
        self.apply_mask = apply_mask
        self._arrays = self.store.population(method).arrays
        whole = torch.arange(self.index.num_states)
        self._epoch_ids = torch.tensor(self.epochs) if isinstance(self.epochs, int) else whole
        self._originals: dict[int, torch.Tensor] = {}  # final states, read once: plain tensors, fork-safe

    def __len__(self) -> int:
        return len(self.index.units)

    @property
    def model_ids(self) -> list[int]:
        return self.index.model_ids

    def __getitem__(self, i: int) -> Any:
        model_id, level_index = self.index.units[i]
        item: Item = {
            "model_id": torch.tensor(model_id),
            "level": torch.tensor(self.index.info.levels[level_index], dtype=torch.float32),
            "epoch": self._epoch_ids.clone(),
            "factors": dict(self.index.factors[model_id]),
            "original_properties": self._props("original", self.index.properties("original", model_id, 0)[-1]),
            "original": self._original(model_id),
        }
        item.update(self._twin_arrays(model_id, level_index))
        twin = self.index.properties(self.method, model_id, level_index)[self.epochs]
        item["twin_properties"] = self._props(self.method, twin)
        if self.target_transform is not None:
            item["twin_properties"] = self.target_transform(item["twin_properties"])
        return self.transform(item) if self.transform is not None else item

    def _twin_arrays(self, model_id: int, level_index: int) -> dict[str, torch.Tensor]:
        """Twin weights (pruned entries as exact zeros unless ``apply_mask`` is off), mask, (VD) log-alpha."""
        read = {
            name: torch.from_numpy(self.store.read(self.method, name, model_id, level_index, self.epochs))
            for name in self._arrays
        }
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
            self._originals[model_id] = torch.from_numpy(self.store.read("original", "weights", model_id, 0, -1))
        return self.view(self._originals[model_id].clone())  # a copy: transforms may work in place

    def _props(self, population: str, values: np.ndarray) -> dict[str, torch.Tensor]:
        columns = torch.from_numpy(values.copy()).unbind(-1)  # one tensor per property, one copy in all
        return dict(zip(self.index.property_names[population], columns, strict=True))

    def __repr__(self) -> str:
        levels = ", ".join(f"{lv:g}" for lv in self.index.levels)
        epochs = f"{self.epochs} of 0..{self.index.num_states - 1}" if isinstance(self.epochs, int) else (
            f"all ({self.index.num_states}: 0..{self.index.num_states - 1})"
        )
        lines = [
            f"Dataset {type(self).__name__}",
            f"    Number of datapoints: {len(self)}",
            f"    Root location: {self.store.zoo_dir}",
            f"    Zoo: {self.store.manifest.zoo}",
            f"    Method: {self.method}",
            f"    Level: {levels}",
            f"    Split: {self.split if self.split is not None else 'all'}",
            f"    Epochs: {epochs}",
            f"    View: {self.view_name}",
            f"    Masked: {self.apply_mask}",
        ]
        if self.transform is not None:
            lines.append(f"    Transform: {self.transform!r}")
        if self.target_transform is not None:
            lines.append(f"    Target transform: {self.target_transform!r}")
        return "\n".join(lines)


class ZooTwinDataset(_TwinDataset):
    __doc__ = f"""One item per (model, twin): the original's final state and the twin at ``epoch``.

    ``ZooTwinDataset("digits_seed", method="mp", level=None, split="train", epoch=-1, root="stores")``.
    An item is a dict; ``ZooTwinDataset.schema`` (``loaders.items.ITEM_SCHEMA``) says what each key
    holds. MP and VD items differ in keys: batch them together with ``loaders.collate_shared``.
    {ARGUMENTS}
        epoch: the twin's recorded epoch, an int (``0`` = the start state, ``-1`` = the last).
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
        target_transform: Callable[[dict[str, torch.Tensor]], Any] | None = None,
        source: str | None = None,
        revision: str | None = None,
    ):
        super().__init__(zoo, method, level, split, root, download, view, transform, target_transform,
                         apply_mask, epoch, source, revision)

    @property
    def epoch(self) -> int:
        return int(self.epochs)  # type: ignore[arg-type]


class ZooTrajectoryDataset(_TwinDataset):
    __doc__ = f"""One item per twin with every recorded epoch stacked: ``twin``, ``mask``, ``log_alpha``
    (VD) as ``[E+1, ...]`` (epoch 0 = the start state), ``twin_properties`` as ``[E+1]`` tensors,
    ``epoch`` = ``arange(E+1)``, plus the original's final state (the twin's starting point).
    Otherwise as :class:`ZooTwinDataset`.
    {ARGUMENTS}"""

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
        target_transform: Callable[[dict[str, torch.Tensor]], Any] | None = None,
        source: str | None = None,
        revision: str | None = None,
    ):
        super().__init__(zoo, method, level, split, root, download, view, transform, target_transform,
                         apply_mask, None, source, revision)
