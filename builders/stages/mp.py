"""The MP population: each original's last state, pruned at every level and fine-tuned under its mask.

A unit is (model, level). Epoch 0 is the state right after pruning; the twin keeps the original's
model id, optimizer and weight decay and uses the spec's MP learning rate and epochs.
"""

from __future__ import annotations

import numpy as np

from zoo_dataset.sparsify.magnitude import global_magnitude_mask
from zoo_dataset.training import TrainJob, UnitKey

from ..context import BuildContext
from .base import TrainingStage


def twin_seed(model_seed: int, level: float) -> int:
    """Data-order seed of one (model, level) twin: distinct per level, reproducible from the model seed."""
    return int(np.random.SeedSequence([int(model_seed), round(level * 1_000_000)]).generate_state(1)[0])


class MPStage(TrainingStage):
    name = "mp"
    population = "mp"
    arrays = ["weights", "masks"]
    requires = "original"

    def levels(self, ctx: BuildContext) -> list[float]:
        return list(ctx.spec.mp.levels)

    def epochs(self, ctx: BuildContext) -> int:
        return ctx.spec.mp.epochs

    def jobs(self, ctx: BuildContext, keys: list[UnitKey]) -> list[TrainJob]:
        configs = ctx.model_configs
        starts = ctx.original_final_states(sorted({k.model_id for k in keys}))
        layout = ctx.store.manifest.parameter_layout
        mp = ctx.spec.mp
        jobs = []
        for k in keys:
            config, (weights, predictions) = configs[k.model_id], starts[k.model_id]
            jobs.append(TrainJob(
                key=k, config=config, architecture=ctx.spec.architecture, kind="masked", epochs=mp.epochs,
                lr=mp.lr_for(config), batch_size=ctx.spec.batch_size, seed=twin_seed(config.seed, k.level),
                initial=weights, mask=global_magnitude_mask(weights, layout, k.level),
                reference_predictions=predictions,
            ))
        return jobs
