"""PyTorch datasets over a store: twin pairs and originals, one state per item or trajectories.

All four datasets are one implementation (:class:`_ZooDataset`) that differs in two choices:
the population served (a twin method with the original beside it, or the originals alone) and
whether an item holds one state (``ZooTwinDataset``, ``ZooOriginalDataset``: one item per unit
and requested epoch) or the requested states stacked (the ``...TrajectoryDataset`` classes). Reads
go through the store reader's fast path (:meth:`ZooStore.read`), which owns the file handles and
reopens them after a fork, so every dataset works with ``DataLoader(num_workers>0)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo_dataset.errors import ZooSpecError

from .items import ITEM_SCHEMA, ORIGINAL_ITEM_SCHEMA
from .resolve import check_bool, open_store
from .twins import TwinIndex
from .views import make_view

Item = dict[str, Any]
Epochs = int | Sequence[int] | range | None
Levels = float | Sequence[float] | None

COMMON_ARGUMENTS = """
        split: ``"train"``, ``"val"`` (or ``"validation"``) or ``"test"`` (by model, fixed when the
            store was built), or ``None`` for every model.
        root: the folder holding stores by zoo name (default: the store root every command uses,
            ``$ZOO_TWINS_CACHE``, else the cache directory).
        download: fetch the store, or the populations it lacks, from ``source``; a store that
            holds them is used offline. A bool (``"no"`` is refused, not taken as true).
        view: how a state is shaped: ``"flat"`` ([P]), ``"layers"`` (per-layer tensors in module
            shapes), ``"tokens"`` (one token per output neuron), ``"nfn"``, ``"graph"``, ``"sane"``,
            or a view made with ``loaders.make_view``; see ``loaders.views``.
        transform: called with each item dict (after ``target_transform``); its result is the item.
            ``loaders.transforms`` holds augmentations and standardisation for every view.
        models: serve only these model ids (e.g. from ``loaders.select_models`` or a fold of
            ``loaders.model_folds``); each must be in ``split`` (an error names those that are
            not): ``split=None`` with ``models=`` picks models across splits. ``None`` serves every
            model of the split.
        drop_nonfinite: leave out states whose weights, log-alphas or recorded properties hold a
            NaN or an infinity (a diverged model: the states tables' ``diverged`` flag, recorded when
            the store was written); ``dataset.dropped`` counts what was left out.
        source: where ``download`` fetches from: ``"hub"`` (Hugging Face Hub), ``"modelzoos"``
            (the published Model Zoos on Zenodo, converted), a mirror URL or a local path;
            default ``$ZOO_TWINS_SOURCE``, else ``"hub"``.
        revision: the Hub revision (branch, tag or commit) ``download`` fetches."""

TWIN_ARGUMENTS = """
    Args:
        zoo: a zoo name (looked up as ``<root>/<zoo>``) or the path of a store directory.
        method: the twins to serve: ``"mp"`` (magnitude pruning), ``"vd"`` (variational dropout)
            or another twin method of the store (``"mp_local"``).
        level: the sparsity level of MP twins as a fraction or percent (``0.5`` or ``50``), a
            list of levels (``[0.5, 0.9]``), or ``None`` for every stored level (one item per model
            and level). VD has no levels.""" + (
    COMMON_ARGUMENTS
) + """
        target_transform: called with ``twin_properties`` (the usual prediction targets); its
            result replaces them in the item.
        apply_mask: serve twin weights with pruned entries zeroed (True), or as trained (False:
            for VD the dense mean weights, the input of the paper's hyper-representation).
"""

ORIGINAL_ARGUMENTS = """
    Args:
        zoo: a zoo name (looked up as ``<root>/<zoo>``) or the path of a store directory.""" + (
    COMMON_ARGUMENTS
) + """
        target_transform: called with ``original_properties`` (the prediction targets); its
            result replaces them in the item.
"""


class _ZooDataset(Dataset):
    """Items of one population's units: (original, twin) pairs, or originals alone
    (``method="original"``); one requested epoch per item, or all of them stacked (``trajectory``)."""

    trajectory = False
    schema = ITEM_SCHEMA

    def __init__(
        self,
        zoo: str | Path,
        method: str,
        level: Levels,
        split: str | None,
        root: str | Path | None,
        download: bool,
        view: str,
        transform: Callable[[Item], Any] | None,
        target_transform: Callable[[dict[str, torch.Tensor]], Any] | None,
        apply_mask: bool,
        epoch: Epochs,
        source: str | None = None,
        revision: str | None = None,
        models: Iterable[int] | None = None,
        drop_nonfinite: bool = False,
    ):
        for name, flag in (("download", download), ("apply_mask", apply_mask), ("drop_nonfinite", drop_nonfinite)):
            check_bool(name, flag)
        self.original_only = type(self).schema is ORIGINAL_ITEM_SCHEMA
        if method == "original" and not self.original_only:
            raise ZooSpecError(
                "method 'original' is not a twin method: ZooOriginalDataset and ZooOriginalTrajectoryDataset "
                "serve the original population"
            )
        populations = ("original",) if self.original_only else ("original", method)
        self.store = open_store(zoo, root, download, populations, source, revision)
        self.index = TwinIndex(self.store, method, level, split, models)
        self.method, self.split = method, self.index.split
        self.epochs: list[int] = self.index.resolve_epochs(epoch)
        self._every_epoch = epoch is None
        self.view = make_view(view, self.store.layout)
        self.view_name = self.view.name
        self.transform, self.target_transform = transform, target_transform
        self.apply_mask = apply_mask
        self._arrays = self.store.population(method).arrays
        self._read_epochs, self._pick = _epoch_reader(self.epochs, self.index.num_states)
        self._originals: dict[int, torch.Tensor] = {}  # final states, read once: plain tensors, fork-safe
        units = [(m, li) for m, li in self.index.units]
        if self.trajectory:
            self._items: list[tuple[int, int, int | None]] = [(m, li, None) for m, li in units]
        else:
            self._items = [(m, li, e) for m, li in units for e in self.epochs]
        self.dropped = {"states": 0, "items": 0}
        if drop_nonfinite:
            self._drop_nonfinite()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def model_ids(self) -> list[int]:
        """The models this dataset serves (sorted)."""
        return sorted({m for m, _, _ in self._items})

    @property
    def item_model_ids(self) -> list[int]:
        """The model id of each item, in item order (for grouping items by model, e.g. folds)."""
        return [m for m, _, _ in self._items]

    def __getitem__(self, i: int) -> Any:
        model_id, level_index, epoch = self._items[i]
        epochs: int | list[int] = self.epochs if epoch is None else epoch
        item: Item = {"model_id": torch.tensor(model_id)}
        if self.original_only:
            item["epoch"] = torch.tensor(epochs)
            item["factors"] = dict(self.index.factors[model_id])
            props = self._props("original", self.index.properties("original", model_id, 0)[epochs])
            item["original"] = self.view(self._read("original", "weights", model_id, 0, epoch))
            item["original_properties"] = props if self.target_transform is None else self.target_transform(props)
            return self.transform(item) if self.transform is not None else item
        item["level"] = torch.tensor(self.index.info.levels[level_index], dtype=torch.float32)
        item["epoch"] = torch.tensor(epochs)
        item["factors"] = dict(self.index.factors[model_id])
        item["original_properties"] = self._props("original", self.index.properties("original", model_id, 0)[-1])
        item["original"] = self._original(model_id)
        item.update(self._twin_arrays(model_id, level_index, epoch))
        twin = self._props(self.method, self.index.properties(self.method, model_id, level_index)[epochs])
        item["twin_properties"] = twin if self.target_transform is None else self.target_transform(twin)
        return self.transform(item) if self.transform is not None else item

    def _read(self, population: str, name: str, model_id: int, level_index: int, epoch: int | None) -> torch.Tensor:
        """One state (``epoch``), or the requested states stacked (``None``), as a tensor."""
        if epoch is not None:
            return torch.from_numpy(self.store.read(population, name, model_id, level_index, epoch))
        values = self.store.read(population, name, model_id, level_index, self._read_epochs)
        return torch.from_numpy(values if self._pick is None else values[self._pick])

    def _twin_arrays(self, model_id: int, level_index: int, epoch: int | None) -> dict[str, torch.Tensor]:
        """Twin weights (pruned entries as exact zeros unless ``apply_mask`` is off), mask, (VD) log-alpha."""
        read = {name: self._read(self.method, name, model_id, level_index, epoch) for name in self._arrays}
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

    def _finite_states(self, population: str, model_id: int, level_index: int) -> np.ndarray:
        """Bool [states]: the unit's arrays (the store's ``diverged`` flag, no array is read) and
        recorded properties are finite at each state."""
        ok = np.isfinite(self.index.properties(population, model_id, level_index)).all(axis=-1)
        return ok & ~self.index.diverged(population, model_id, level_index)

    def _drop_nonfinite(self) -> None:
        finite: dict[tuple[int, int], np.ndarray] = {}
        for model_id, level_index in self.index.units:
            ok = self._finite_states(self.method, model_id, level_index)
            if not self.original_only and not self._finite_states("original", model_id, 0)[-1]:
                ok = np.zeros_like(ok)  # the pair's original is broken: none of its states is a pair
            finite[(model_id, level_index)] = ok
        self.dropped["states"] = int(sum((~ok[self.epochs]).sum() for ok in finite.values()))
        before = len(self._items)
        self._items = [
            (m, li, e) for m, li, e in self._items
            if (finite[(m, li)][self.epochs].all() if e is None else finite[(m, li)][e])
        ]
        self.dropped["items"] = before - len(self._items)

    def __repr__(self) -> str:
        n = self.index.num_states
        if self._every_epoch:
            epochs = f"all ({n}: 0..{n - 1})"
        elif len(self.epochs) == 1:
            epochs = f"{self.epochs[0]} of 0..{n - 1}"
        else:
            epochs = f"{self.epochs} of 0..{n - 1}"
        lines = [
            f"Dataset {type(self).__name__}",
            f"    Number of datapoints: {len(self)}",
            f"    Root location: {self.store.zoo_dir}",
            f"    Zoo: {self.store.manifest.zoo}",
            f"    Method: {self.method}",
        ]
        if not self.original_only:
            levels = ", ".join(f"{lv:g}" for lv in self.index.levels)
            lines.append(f"    Level: {levels if self.index.has_levels else f'none ({self.method} has no levels)'}")
        lines += [
            f"    Split: {self.split if self.split is not None else 'all'}",
            f"    Epochs: {epochs}",
            f"    View: {self.view_name}",
        ]
        if not self.original_only:
            lines.append(f"    Masked: {self.apply_mask}")
        if self.dropped["states"]:
            lines.append(f"    Dropped: {self.dropped['states']} non-finite states ({self.dropped['items']} items)")
        if self.transform is not None:
            lines.append(f"    Transform: {self.transform!r}")
        if self.target_transform is not None:
            lines.append(f"    Target transform: {self.target_transform!r}")
        return "\n".join(lines)


def _epoch_reader(epochs: list[int], n_states: int) -> tuple[slice, np.ndarray | None]:
    """How to read the requested states in one call: a slice, then (if needed) a pick within it."""
    steps = {b - a for a, b in zip(epochs, epochs[1:], strict=False)}
    if len(epochs) == 1:
        return slice(epochs[0], epochs[0] + 1), None
    if len(steps) == 1 and (step := steps.pop()) > 0:
        return slice(epochs[0], epochs[-1] + 1, step), None
    return slice(0, n_states), np.asarray(epochs)


class ZooTwinDataset(_ZooDataset):
    __doc__ = f"""One item per (model, twin, requested epoch): the original's final state and the twin
    at that epoch.

    ``ZooTwinDataset("digits_seed", method="mp", level=None, split="train", epoch=-1, root="stores")``.
    An item is a dict; ``ZooTwinDataset.schema`` (``loaders.items.ITEM_SCHEMA``) says what each key
    holds. MP and VD items differ in keys: batch them together with ``loaders.collate_shared``.
    {TWIN_ARGUMENTS}
        epoch: the twin's recorded epoch(s): an int (``0`` = the start state; negative counts
            from the end as in Python: ``-1`` = the last, ``-2`` the one before), a list, tuple or
            range of ints (one item per epoch, in that order), or ``None`` (every recorded epoch).
    """

    schema = ITEM_SCHEMA

    def __init__(
        self,
        zoo: str | Path,
        method: str = "mp",
        level: Levels = None,
        split: str | None = "train",
        epoch: Epochs = -1,
        root: str | Path | None = None,
        download: bool = False,
        view: str = "flat",
        transform: Callable[[Item], Any] | None = None,
        apply_mask: bool = True,
        target_transform: Callable[[dict[str, torch.Tensor]], Any] | None = None,
        source: str | None = None,
        revision: str | None = None,
        models: Iterable[int] | None = None,
        drop_nonfinite: bool = False,
    ):
        super().__init__(zoo, method, level, split, root, download, view, transform, target_transform,
                         apply_mask, epoch, source, revision, models, drop_nonfinite)

    @property
    def epoch(self) -> int | list[int]:
        """The served epoch (an int) when one was asked for, else the list of served epochs."""
        return self.epochs[0] if len(self.epochs) == 1 else list(self.epochs)


class ZooTrajectoryDataset(_ZooDataset):
    __doc__ = f"""One item per twin with its requested epochs stacked (default every recorded epoch):
    ``twin``, ``mask``, ``log_alpha`` (VD) as ``[E, ...]`` (epoch 0 = the start state),
    ``twin_properties`` as ``[E]`` tensors, ``epoch`` = the epochs, plus the original's final state
    (the twin's starting point). Otherwise as :class:`ZooTwinDataset`.
    {TWIN_ARGUMENTS}
        epoch: the epochs to stack: ``None`` (every recorded epoch), a list, tuple or range of
            ints in the order wanted, or one int.
    """

    schema = ITEM_SCHEMA
    trajectory = True

    def __init__(
        self,
        zoo: str | Path,
        method: str = "mp",
        level: Levels = None,
        split: str | None = "train",
        root: str | Path | None = None,
        download: bool = False,
        view: str = "flat",
        transform: Callable[[Item], Any] | None = None,
        apply_mask: bool = True,
        target_transform: Callable[[dict[str, torch.Tensor]], Any] | None = None,
        source: str | None = None,
        revision: str | None = None,
        epoch: Epochs = None,
        models: Iterable[int] | None = None,
        drop_nonfinite: bool = False,
    ):
        super().__init__(zoo, method, level, split, root, download, view, transform, target_transform,
                         apply_mask, epoch, source, revision, models, drop_nonfinite)


class ZooOriginalDataset(_ZooDataset):
    __doc__ = f"""One item per (original model, requested epoch): the basic Model Zoos task, the
    properties of a model at every epoch.

    ``ZooOriginalDataset("digits_seed", split="train", epoch=None, root="stores")``. An item holds
    ``model_id``, ``epoch``, ``factors``, ``original`` (the state at that epoch, in the view) and
    ``original_properties``; ``ZooOriginalDataset.schema`` says what each key holds. With
    ``loaders.collate_shared`` it batches together with twin items (the keys they share).
    {ORIGINAL_ARGUMENTS}
        epoch: the recorded epoch(s): an int (``0`` = the initialisation; negative counts
            from the end as in Python: ``-1`` = the last), a list, tuple or range of ints (one
            item per epoch, in that order), or ``None`` (every recorded epoch).
    """

    schema = ORIGINAL_ITEM_SCHEMA

    def __init__(
        self,
        zoo: str | Path,
        split: str | None = "train",
        epoch: Epochs = -1,
        root: str | Path | None = None,
        download: bool = False,
        view: str = "flat",
        transform: Callable[[Item], Any] | None = None,
        target_transform: Callable[[dict[str, torch.Tensor]], Any] | None = None,
        source: str | None = None,
        revision: str | None = None,
        models: Iterable[int] | None = None,
        drop_nonfinite: bool = False,
    ):
        super().__init__(zoo, "original", None, split, root, download, view, transform, target_transform,
                         True, epoch, source, revision, models, drop_nonfinite)

    @property
    def epoch(self) -> int | list[int]:
        """The served epoch (an int) when one was asked for, else the list of served epochs."""
        return self.epochs[0] if len(self.epochs) == 1 else list(self.epochs)


class ZooOriginalTrajectoryDataset(_ZooDataset):
    __doc__ = f"""One item per original model with its requested epochs stacked (default every
    recorded epoch): ``original`` as ``[E, ...]``, ``original_properties`` as ``[E]`` tensors,
    ``epoch`` = the epochs. Otherwise as :class:`ZooOriginalDataset`.
    {ORIGINAL_ARGUMENTS}
        epoch: the epochs to stack: ``None`` (every recorded epoch), a list, tuple or range of
            ints in the order wanted, or one int.
    """

    schema = ORIGINAL_ITEM_SCHEMA
    trajectory = True

    def __init__(
        self,
        zoo: str | Path,
        split: str | None = "train",
        epoch: Epochs = None,
        root: str | Path | None = None,
        download: bool = False,
        view: str = "flat",
        transform: Callable[[Item], Any] | None = None,
        target_transform: Callable[[dict[str, torch.Tensor]], Any] | None = None,
        source: str | None = None,
        revision: str | None = None,
        models: Iterable[int] | None = None,
        drop_nonfinite: bool = False,
    ):
        super().__init__(zoo, "original", None, split, root, download, view, transform, target_transform,
                         True, epoch, source, revision, models, drop_nonfinite)
