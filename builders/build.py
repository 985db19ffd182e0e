"""``build_zoo``: the Python entry point behind ``zoo-build``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from loaders.cache import store_root
from zoo_dataset.data import get_source
from zoo_dataset.errors import ZooSpecError
from zoo_dataset.methods import methods
from zoo_dataset.methods.original import published_only
from zoo_dataset.model_layout import input_size, layout_for
from zoo_dataset.specs import PUBLISHED, ZooSpec
from zoo_dataset.store import StoreWriter, ZooStore
from zoo_dataset.store.lock import writer_lock
from zoo_dataset.store.manifest import MANIFEST
from zoo_dataset.store.paths import check_zoo_name
from zoo_dataset.training import Trainer
from zoo_dataset.training.device_memory import TRAIN_SAMPLES_BOUND, group_size
from zoo_dataset.training.engine import PopulationEngine

from .context import BuildContext
from .stages import DEFAULT_STAGES, STAGES, StageReport


def device_chunk(spec: ZooSpec, device: str) -> int | None:
    """A new store's training chunk on ``device``: on CUDA the group its free memory holds (None on
    CPU: the default, ``models_per_shard``)."""
    if torch.device(device).type != "cuda":
        return None
    return group_size(device, spec.architecture, get_source(spec.dataset).channels, spec.batch_size,
                      TRAIN_SAMPLES_BOUND, input_size(spec))


def build_zoo(
    spec: ZooSpec,
    root: Path | str | None = None,
    stages: Sequence[str] | None = None,
    resume: bool = False,
    device: str = "cpu",
    data_dir: Path | str | None = None,
    trainer: Trainer | None = None,
    progress: bool = True,
) -> tuple[ZooStore, list[StageReport]]:
    """Run ``stages`` (default: the default methods and the card) of ``spec`` into ``<root>/<zoo>``;
    returns a reader.

    ``root`` defaults to the store root every command shares (:func:`loaders.cache.store_root`).
    The store's writer lock is held throughout: a second build of the same store is refused.
    """
    root = store_root(root)
    stages = list(stages or DEFAULT_STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ZooSpecError(f"unknown stage(s) {', '.join(unknown)}; available: {', '.join(STAGES)}")
    # a stage of a method that starts from nothing (the original training) may create the store
    creates = any(m.requires is None for name, m in methods().items() if name in stages)
    if creates and spec.variant == PUBLISHED and not (root / check_zoo_name(spec.name) / MANIFEST).exists():
        raise ZooSpecError(published_only(spec.name))  # before a store skeleton is made
    source = get_source(spec.dataset)
    if creates and not resume and not source.is_available(Path(data_dir) if data_dir else None):
        # fail before a new store is created; a resumed (or ingested) store loads data only if a stage needs it
        source.load(input_size(spec), Path(data_dir) if data_dir else None)  # raises a clear error
    with writer_lock(root / check_zoo_name(spec.name)):
        writer = StoreWriter.open(root, spec, layout_for(spec), resume=resume, create=creates,
                                  train_chunk=device_chunk(spec, device))
        trainer = trainer or PopulationEngine(device)
        if torch.device(device).type == "cuda" and getattr(trainer, "max_models", False) is None:
            # the engine here or in each Ray task groups as recorded, whatever memory is free now
            trainer.max_models = writer.manifest.chunk_size
        ctx = BuildContext(spec=spec, store=writer, data_dir=Path(data_dir) if data_dir else None,
                           trainer=trainer, progress=progress)
        reports = [STAGES[name].run(ctx) for name in stages]
    return ZooStore(writer.zoo_dir), reports
