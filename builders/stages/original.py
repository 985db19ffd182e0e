"""The original population: every model trained from its generating factors."""

from __future__ import annotations

from zoo_dataset.training import TrainJob, UnitKey

from ..context import BuildContext
from .base import TrainingStage


class OriginalStage(TrainingStage):
    name = "original"
    population = "original"

    def epochs(self, ctx: BuildContext) -> int:
        return ctx.spec.epochs

    def jobs(self, ctx: BuildContext, keys: list[UnitKey]) -> list[TrainJob]:
        configs = ctx.model_configs
        return [
            TrainJob(key=k, config=configs[k.model_id], architecture=ctx.spec.architecture, kind="plain",
                     epochs=ctx.spec.epochs, lr=configs[k.model_id].lr, batch_size=ctx.spec.batch_size,
                     seed=configs[k.model_id].seed)
            for k in keys
        ]
