"""The stage pipeline: each stage turns a zoo spec plus what earlier stages stored into a population.

A :class:`MethodStage` runs one registered method (:mod:`zoo_dataset.methods`): it lists the
method's units (model, level) in fixed training chunks (runs of the manifest's ``chunk_size`` model
ids), asks the trainer for every chunk that is not finished, whole, and stages each result the
moment it arrives. A trainer never groups models across chunks, so which models train together
depends on the zoo and the recorded chunk size only: a resumed build, one with more ``--workers``
or on Ray, computes every unit exactly as an uninterrupted one. Which units exist and how a unit
becomes a :class:`TrainJob` is the method's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import click

from zoo_dataset.counter_rng import GENERATOR
from zoo_dataset.errors import StoreError
from zoo_dataset.jobs import TrainJob, UnitKey
from zoo_dataset.methods import Method
from zoo_dataset.store import PopulationWriter
from zoo_dataset.store.layout_on_disk import INGEST_RECORD

from ..context import BuildContext
from ..executors import run_chunks
from ..progress import stage_progress

UNITS_PER_BATCH = 64  # at least this many units (whole chunks) per trainer call: work for every worker


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

    def check_repairable(self, ctx: BuildContext, population: PopulationWriter) -> None:
        """Raise if shards a resume found damaged (``population.dropped``) cannot be retrained: an
        ingested zoo's lost originals would be replaced by models trained here, not the published ones."""
        if population.dropped and self.method.requires is None and (ctx.store.zoo_dir / INGEST_RECORD).exists():
            raise StoreError(f"{ctx.store.zoo_dir} holds ingested originals and lost some of them "
                             f"({'; '.join(population.dropped)}); ingest them again with zoo-build --from-original")

    def run(self, ctx: BuildContext) -> StageReport:
        self.check_ready(ctx)
        method, spec = self.method, ctx.spec
        levels = method.levels(spec)
        population = ctx.store.population(method.name, levels, method.epochs(spec), list(method.arrays), GENERATOR)
        self.check_repairable(ctx, population)
        for line in population.dropped:
            click.echo(f"{line}; rebuilding it", err=True)
        population.pack_ready()  # units staged by a killed run whose shard was never packed
        chunks = [[UnitKey(m, lv) for m in ids for lv in levels] for ids in ctx.store.manifest.training_chunks()]
        total = sum(len(c) for c in chunks)
        unfinished = [c for c in chunks if not all(population.is_done(k) for k in c)]
        todo = sum(not population.is_done(k) for c in unfinished for k in c)
        unit = "model" if len(levels) == 1 else "model-level"
        with stage_progress(self.name, total, total - todo, unit, ctx.progress) as bar:
            def show_epoch(epoch: int, epochs: int, models: int) -> None:
                bar.set_postfix_str(f"epoch {epoch}/{epochs} of {models} model(s) in training", refresh=True)

            for call in _calls(unfinished, getattr(ctx.trainer, "workers", 1)):
                jobs = iter(self.jobs(ctx, [k for chunk in call for k in chunk]))  # in key order
                job_chunks = [[next(jobs) for _ in chunk] for chunk in call]
                for result in run_chunks(ctx.trainer, job_chunks, ctx.data, on_epoch=show_epoch):
                    if not population.is_done(result.key):  # its chunk's finished units train again, unstaged
                        population.stage(result)
                        bar.update(1)
        return StageReport(self.name, total, todo)

    def jobs(self, ctx: BuildContext, keys: list[UnitKey]) -> list[TrainJob]:
        """The method's jobs for ``keys`` (in key order), started from the required population's last states."""
        requires = self.method.requires
        starts = ctx.final_states(requires, sorted({k.model_id for k in keys})) if requires else {}
        return self.method.jobs(ctx.spec, keys, ctx.model_configs, starts, ctx.store.manifest.parameter_layout)


def _calls(chunks: list[list[UnitKey]], workers: int = 1) -> list[list[list[UnitKey]]]:
    """Whole chunks, gathered until a call holds at least UNITS_PER_BATCH units and one chunk per
    worker: a chunk trains whole in one worker, so a call of one chunk (a 64-model shard is one)
    leaves the other workers idle."""
    calls: list[list[list[UnitKey]]] = [[]]
    for chunk in chunks:
        if sum(len(c) for c in calls[-1]) >= UNITS_PER_BATCH and len(calls[-1]) >= workers:
            calls.append([])
        calls[-1].append(chunk)
    return [c for c in calls if c]
