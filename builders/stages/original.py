"""The original population: every model trained from its generating factors."""

from __future__ import annotations

from zoo_dataset.errors import StoreError
from zoo_dataset.store import PopulationWriter
from zoo_dataset.training import TrainJob, UnitKey

from ..context import BuildContext
from .base import TrainingStage

INGEST_RECORD = "ingest.json"  # written by ingest: the originals are published models, not trained here


class OriginalStage(TrainingStage):
    name = "original"
    population = "original"

    def epochs(self, ctx: BuildContext) -> int:
        return ctx.spec.epochs

    def check_repairable(self, ctx: BuildContext, population: PopulationWriter) -> None:
        """An ingested zoo's lost shard cannot be retrained: that would replace published models."""
        if population.dropped and (ctx.store.zoo_dir / INGEST_RECORD).exists():
            raise StoreError(f"{ctx.store.zoo_dir} holds ingested originals and lost some of them "
                             f"({'; '.join(population.dropped)}); ingest them again with zoo-build --from-original")

    def jobs(self, ctx: BuildContext, keys: list[UnitKey]) -> list[TrainJob]:
        configs = ctx.model_configs
        return [
            TrainJob(key=k, config=configs[k.model_id], architecture=ctx.spec.architecture, kind="plain",
                     epochs=ctx.spec.epochs, lr=configs[k.model_id].lr, batch_size=ctx.spec.batch_size,
                     seed=configs[k.model_id].seed)
            for k in keys
        ]
