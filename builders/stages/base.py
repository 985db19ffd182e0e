"""The stage pipeline: each stage turns a zoo spec plus what earlier stages stored into a population.

A :class:`MethodStage` runs one registered method (:mod:`zoo_dataset.methods`): it lists the
method's units (model, level), skips the finished ones, asks the trainer for the rest in batches
and stages each result the moment it arrives. Which units exist and how a unit becomes a
:class:`TrainJob` is the method's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from zoo_dataset.counter_rng import GENERATOR
from zoo_dataset.errors import StoreError
from zoo_dataset.jobs import TrainJob, UnitKey
from zoo_dataset.methods import Method

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


class MethodStage:
    """The stage that builds one method's population."""

    def __init__(self, method: Method):
        self.method = method
        self.name = method.name

    def check_ready(self, ctx: BuildContext) -> None:
        requires = self.method.requires
        if requires is None:
            return
        info = ctx.store.manifest.populations.get(requires)
        if info is None or info.status != "complete":
            raise StoreError(
                f"stage {self.name} needs the {requires} population, which {ctx.store.zoo_dir} does not "
                f"hold complete; run `zoo-build --zoo {ctx.spec.name} --stages {requires}` (or ingest it) first"
            )

    def run(self, ctx: BuildContext) -> StageReport:
        self.check_ready(ctx)
        method, spec = self.method, ctx.spec
        levels = method.levels(spec)
        population = ctx.store.population(method.name, levels, method.epochs(spec), list(method.arrays), GENERATOR)
        population.pack_ready()  # units staged by a killed run whose shard was never packed
        keys = [UnitKey(m.model_id, lv) for m in spec.models() for lv in levels]
        todo = [k for k in keys if not population.is_done(k)]
        unit = "model" if len(levels) == 1 else "model-level"
        with stage_progress(self.name, len(keys), len(keys) - len(todo), unit, ctx.progress) as bar:
            def show_epoch(epoch: int, epochs: int, models: int) -> None:
                bar.set_postfix_str(f"epoch {epoch}/{epochs} of {models} model(s) in training", refresh=True)

            batch = max(UNITS_PER_BATCH, spec.models_per_shard * len(levels))
            for start in range(0, len(todo), batch):
                jobs = self.jobs(ctx, todo[start : start + batch])
                for result in ctx.trainer.run(jobs, ctx.data, on_epoch=show_epoch):
                    population.stage(result)
                    bar.update(1)
        return StageReport(self.name, len(keys), len(todo))

    def jobs(self, ctx: BuildContext, keys: list[UnitKey]) -> list[TrainJob]:
        """The method's jobs for ``keys``, started from the required population's last states."""
        requires = self.method.requires
        starts = ctx.final_states(requires, sorted({k.model_id for k in keys})) if requires else {}
        return self.method.jobs(ctx.spec, keys, ctx.model_configs, starts, ctx.store.manifest.parameter_layout)
