"""The stage pipeline: each stage turns a zoo spec plus what earlier stages stored into a population.

A :class:`TrainingStage` lists its units (model, level), skips the finished ones, asks the trainer
for the rest in batches and stages each result the moment it arrives. Stages differ only in
which units exist and how a unit becomes a :class:`TrainJob`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from zoo_dataset.errors import StoreError
from zoo_dataset.training import TrainJob, UnitKey

from ..context import BuildContext
from ..progress import stage_progress

UNITS_PER_BATCH = 64  # units handed to the trainer at once: enough for the engine to batch well


@dataclass
class StageReport:
    stage: str
    units_total: int
    units_trained: int


class Stage(Protocol):
    name: str

    def run(self, ctx: BuildContext) -> StageReport: ...


class TrainingStage:
    """Base of the stages that train a population (original, mp, vd)."""

    name: str = ""
    population: str = ""
    arrays: list[str] = ["weights"]
    requires: str | None = None  # population that must be complete first

    def levels(self, ctx: BuildContext) -> list[float]:
        return [0.0]

    def epochs(self, ctx: BuildContext) -> int:
        raise NotImplementedError

    def jobs(self, ctx: BuildContext, keys: list[UnitKey]) -> list[TrainJob]:
        raise NotImplementedError

    def check_ready(self, ctx: BuildContext) -> None:
        if self.requires is None:
            return
        info = ctx.store.manifest.populations.get(self.requires)
        if info is None or info.status != "complete":
            raise StoreError(
                f"stage {self.name} needs the {self.requires} population, which {ctx.store.zoo_dir} does not "
                f"hold complete; run `zoo-build --zoo {ctx.spec.name} --stages {self.requires}` (or ingest it) first"
            )

    def run(self, ctx: BuildContext) -> StageReport:
        self.check_ready(ctx)
        population = ctx.store.population(self.population, self.levels(ctx), self.epochs(ctx), self.arrays)
        population.pack_ready()  # units staged by a killed run whose shard was never packed
        keys = [UnitKey(m.model_id, lv) for m in ctx.spec.models() for lv in self.levels(ctx)]
        todo = [k for k in keys if not population.is_done(k)]
        unit = "model" if len(self.levels(ctx)) == 1 else "model-level"
        with stage_progress(self.name, len(keys), len(keys) - len(todo), unit, ctx.progress) as bar:
            def show_epoch(epoch: int, epochs: int, models: int) -> None:
                bar.set_postfix_str(f"epoch {epoch}/{epochs} of {models} model(s) in training", refresh=True)

            batch = max(UNITS_PER_BATCH, ctx.spec.models_per_shard * len(self.levels(ctx)))
            for start in range(0, len(todo), batch):
                jobs = self.jobs(ctx, todo[start : start + batch])
                for result in ctx.trainer.run(jobs, ctx.data, on_epoch=show_epoch):
                    population.stage(result)
                    bar.update(1)
        return StageReport(self.name, len(keys), len(todo))
