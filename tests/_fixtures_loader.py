"""A small built store shared by the loader tests (built once per test process).

The original population comes from the real ``build_zoo``. Twin populations come from the real
MP/VD stages when they are registered; otherwise stand-in twins (one-shot magnitude pruning, random
log-alpha) are written through the real ``PopulationWriter`` so that the loader sees the same
store format either way.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from builders.build import build_zoo
from builders.stages import STAGES
from zoo_dataset.architectures import build_model
from zoo_dataset.counter_rng import GENERATOR
from zoo_dataset.data import load_dataset
from zoo_dataset.metrics import evaluate
from zoo_dataset.model_layout import input_size, layout_for
from zoo_dataset.specs import ZooSpec, get_spec
from zoo_dataset.store import StoreWriter, ZooStore
from zoo_dataset.training import JobResult, UnitKey
from zoo_dataset.training.reference import state_metrics

# models 0, 1 and 4 fall in the train, test and val splits of digits_seed: every split, fewest models
SPEC = get_spec("digits_seed").with_overrides(
    model_subset=(0, 1, 4), epochs=1, mp_epochs=1, mp_levels=(0.5, 0.9), vd_epochs=1
)


def loader_store(base: Path) -> Path:
    """Directory of the shared store under ``base`` (a session temp dir), building it if needed."""
    root = base / "loader-store"
    zoo_dir = root / SPEC.name
    if (zoo_dir / "manifest.json").exists() and {"original", "mp", "vd"} <= set(
        ZooStore(zoo_dir).populations
    ):
        return zoo_dir
    real = [s for s in ("original", "mp", "vd") if s in STAGES]
    build_zoo(SPEC, root, stages=real, resume=True, progress=False)
    for method in ("mp", "vd"):
        if method not in real:
            _write_stand_in_twins(SPEC, root, method)
    return zoo_dir


def _write_stand_in_twins(spec: ZooSpec, root: Path, method: str) -> None:
    layout = layout_for(spec)
    data = load_dataset(spec.dataset, input_size(spec))
    writer = StoreWriter.open(root, spec, layout, resume=True)
    reader = ZooStore(writer.zoo_dir)
    levels = list(spec.mp.levels) if method == "mp" else [0.0]
    arrays = ["weights", "masks"] + (["log_alpha"] if method == "vd" else [])
    population = writer.population(method, levels, 1, arrays, GENERATOR)
    rng = np.random.default_rng(0)
    is_weight = layout.weight_mask()
    for config in spec.models():
        final = reader.weights("original", config.model_id, -1)
        net = build_model(spec.architecture, data.channels, config.activation, config.dropout)
        reference = evaluate(layout.load_into(net, final), data.test_x, data.test_y)[2]
        for level in levels:
            log_alpha = None
            if method == "mp":
                cut = np.quantile(np.abs(final[is_weight]), level)
                mask = ~is_weight | (np.abs(final) > cut)
            else:
                log_alpha = rng.normal(0.0, 3.0, final.shape).astype(np.float32)
                mask = log_alpha < spec.vd.threshold
            effective = np.where(mask, final, 0.0).astype(np.float32)
            model = layout.load_into(net, effective)
            train, test = (
                evaluate(model, data.train_x, data.train_y),
                evaluate(model, data.test_x, data.test_y),
            )
            row = state_metrics(layout, effective, mask, train[:2], test[:2], test[2], reference)
            population.stage(
                JobResult(
                    key=UnitKey(config.model_id, level),
                    weights=np.stack([final, final]),
                    metrics=[{"epoch": e, **row} for e in (0, 1)],
                    masks=np.stack([mask, mask]),
                    log_alpha=None if log_alpha is None else np.stack([log_alpha, log_alpha]),
                )
            )


def shared_loader_store(tmp_path_factory) -> Path:
    """The store, built once per test session even with pytest-xdist workers (a file lock guards it)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by all workers of one session
    with FileLock(str(base / "loader-store.lock")):
        return loader_store(base)
