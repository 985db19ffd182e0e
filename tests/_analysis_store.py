"""A synthetic twin store written through the real writer: known arrays, fast, no training.

Metrics are random but the sparsity columns are computed from the stored masks, so tests can
check report numbers against direct computations on the store's arrays and tables.
"""

from __future__ import annotations

import numpy as np

from zoo_dataset.counter_rng import GENERATOR
from zoo_dataset.model_layout import layout_for
from zoo_dataset.specs import get_spec
from zoo_dataset.store import StoreWriter, ZooStore
from zoo_dataset.training import JobResult, UnitKey


def _metrics(layout, weights, masks, rng, n_states):
    rows = []
    for epoch in range(n_states):
        effective = weights[epoch] if masks is None else np.where(masks[epoch], weights[epoch], 0.0)
        train, test = rng.uniform(0.5, 1.0), rng.uniform(0.4, 0.9)
        row = {
            "epoch": epoch,
            "train_loss": 1 - train,
            "train_acc": train,
            "test_loss": 1 - test,
            "test_acc": test,
            "ggap": train - test,
            "sparsity": float(layout.global_sparsity(effective)),
            "agreement": float("nan") if masks is None else rng.uniform(0.5, 1.0),
        }
        row.update({f"sparsity_{k}": float(v) for k, v in layout.layer_sparsity(effective).items()})
        rows.append(row)
    return rows


def synthetic_store(
    root,
    n_models=6,
    populations=("original", "mp", "vd"),
    original_epochs=3,
    mp_levels=(0.5, 0.7, 0.9),
    mp_epochs=2,
    vd_epochs=6,
    seed=0,
    zoo="digits_seed",
    architecture=None,
) -> ZooStore:
    spec = get_spec(zoo).with_overrides(
        architecture=architecture,
        model_subset=range(n_models),
        epochs=original_epochs,
        mp_epochs=mp_epochs,
        mp_levels=mp_levels,
        vd_epochs=vd_epochs,
    )
    layout = layout_for(spec)
    rng = np.random.default_rng(seed)
    n_params, is_weight = layout.num_params, layout.weight_mask()
    writer = StoreWriter.open(root, spec, layout, resume=False)
    ids = [m.model_id for m in spec.models()]
    if "original" in populations:
        pop = writer.population("original", [0.0], original_epochs, ["weights"], GENERATOR)
        for m in ids:
            w = rng.normal(size=(original_epochs + 1, n_params)).astype(np.float32)
            pop.stage(JobResult(UnitKey(m, 0.0), w, _metrics(layout, w, None, rng, original_epochs + 1)))
    if "mp" in populations:
        pop = writer.population("mp", list(mp_levels), mp_epochs, ["weights", "masks"], GENERATOR)
        for m in ids:
            for level in mp_levels:
                w = rng.normal(size=(mp_epochs + 1, n_params)).astype(np.float32)
                keep = ~is_weight | (rng.random(n_params) >= level)
                masks = np.repeat(keep[None], mp_epochs + 1, axis=0)
                pop.stage(
                    JobResult(UnitKey(m, level), w, _metrics(layout, w, masks, rng, mp_epochs + 1), masks)
                )
    if "vd" in populations:
        pop = writer.population("vd", [0.0], vd_epochs, ["weights", "masks", "log_alpha"], GENERATOR)
        for m in ids:
            w = rng.normal(size=(vd_epochs + 1, n_params)).astype(np.float32)
            drift = np.linspace(-4, 5, vd_epochs + 1)[:, None]
            log_alpha = (drift + rng.normal(size=(vd_epochs + 1, n_params))).astype(np.float32)
            masks = (log_alpha < 3.0) | ~is_weight
            pop.stage(
                JobResult(
                    UnitKey(m, 0.0), w, _metrics(layout, w, masks, rng, vd_epochs + 1), masks, log_alpha
                )
            )
    return ZooStore(writer.zoo_dir)
