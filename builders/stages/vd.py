"""The VD population: each original's last state, trained with sparse variational dropout.

Epoch 0 is the converted original before any VD step; the twin keeps the original's model id,
optimizer and weight decay, and uses the spec's VD learning rate, epochs and KL weighting.
"""

from __future__ import annotations

from zoo_dataset.training import TrainJob, UnitKey

from ..context import BuildContext
from .base import TrainingStage


class VDStage(TrainingStage):
    name = "vd"
    population = "vd"
    arrays = ["weights", "masks", "log_alpha"]
    requires = "original"

    def epochs(self, ctx: BuildContext) -> int:
        return ctx.spec.vd.epochs

    def jobs(self, ctx: BuildContext, keys: list[UnitKey]) -> list[TrainJob]:
        configs = ctx.model_configs
        starts = ctx.original_final_states([k.model_id for k in keys])
        vd = ctx.spec.vd
        options = {"threshold": vd.threshold, "kl_warmup_epochs": vd.kl_warmup_epochs, "kl_objective": vd.kl_objective}
        return [
            TrainJob(key=k, config=configs[k.model_id], architecture=ctx.spec.architecture, kind="vd",
                     epochs=vd.epochs, lr=vd.lr_for(configs[k.model_id]), batch_size=ctx.spec.batch_size,
                     seed=configs[k.model_id].seed, initial=starts[k.model_id][0],
                     reference_predictions=starts[k.model_id][1], options=dict(options))
            for k in keys
        ]
