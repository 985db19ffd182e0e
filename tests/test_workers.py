"""zoo-build --workers N: shares of each batch train in N local processes, one engine each."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from builders.build import build_zoo
from builders.cli import main
from builders.executors import ProcessTrainer, _train_batch, auto_workers, make_trainer
from zoo_dataset.data import load_dataset
from zoo_dataset.errors import WorkerError, ZooSpecError
from zoo_dataset.specs import get_spec
from zoo_dataset.training import TrainJob, UnitKey
from zoo_dataset.training.engine import PopulationEngine

SPEC = {"model_subset": range(3), "epochs": 1, "mp_epochs": 1, "mp_levels": (0.5,), "vd_epochs": 1}


def test_two_worker_build_equals_a_local_build(tmp_path, one_thread):
    """Models train in the store's fixed chunks ([0, 1] and [2]) wherever they run: 2 workers give a
    one-process build's store bit for bit (a grouped convolution's rounding depends on the group, a
    reduction's on the thread count: the local build runs on one thread, as each worker does)."""
    spec = get_spec("digits_seed").with_overrides(**SPEC, models_per_shard=2)
    local, _ = build_zoo(spec, tmp_path / "local", progress=False, trainer=PopulationEngine())
    trainer = ProcessTrainer(workers=2)
    try:
        pooled, _ = build_zoo(spec, tmp_path / "pooled", progress=False, trainer=trainer)
    finally:
        trainer.close()
    assert pooled.populations == local.populations == ["original", "mp", "vd"]
    for population in local.populations:
        for model_id in range(3):
            for level in local.population(population).levels:
                for name in local.population(population).arrays:
                    np.testing.assert_array_equal(pooled.array(name, population, model_id, slice(None), level),
                                                  local.array(name, population, model_id, slice(None), level))
    pooled.verify()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"workers": 0}, "--workers must be 1 to"),
    ({"workers": 100_000}, "--workers must be 1 to"),
    ({"executor": "ray", "workers": 2}, "--workers is for the local executor"),
])
def test_bad_worker_settings_are_refused(kwargs, message):
    with pytest.raises(ZooSpecError, match=message):
        make_trainer(**kwargs)


CORES = os.cpu_count()


@pytest.mark.parametrize(("value", "message"), [
    ("0", f"error: --workers must be 1 to {CORES} (this machine's cores), got 0"),
    ("100000", f"error: --workers must be 1 to {CORES} (this machine's cores), got 100000"),
    ("many", "error: --workers must be auto or a whole number, got 'many'"),
])
def test_cli_reports_bad_workers_in_one_line(tmp_path, value, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["--zoo", "digits_seed", "--workers", value, "--out", str(out), "--models", "0",
                                       "--epochs", "1", "--stages", "original", "--quiet"])
    assert result.exit_code == 2
    assert result.output.strip() == message
    assert not out.exists()


def test_auto_workers_are_one_engine_per_thread_on_cpu_within_memory(monkeypatch):
    """auto: one worker per torch thread on CPU, no more than cores or memory holds at 1.5 GiB each; one
    on cuda and with Ray (a GPU takes one engine, Ray sizes its own workers)."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    page = os.sysconf("SC_PAGE_SIZE")
    for memory, expected in ((64 << 30, 8), (6 << 30, 4), (1 << 30, 1)):
        monkeypatch.setattr(os, "sysconf", lambda name, m=memory: m // page if name == "SC_PHYS_PAGES" else page)
        assert auto_workers("local", "cpu") == expected
    monkeypatch.setattr(os, "sysconf", lambda name: (64 << 30) // page if name == "SC_PHYS_PAGES" else page)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # more threads than cores (OMP_NUM_THREADS=8): one per core
    assert auto_workers("local", "cpu") == 2
    assert auto_workers("local", "cuda") == 1
    assert auto_workers("ray", "cpu") == 1


def test_workers_report_their_epochs():
    """Progress does not stall while shares train: every epoch a worker finishes reaches on_epoch."""
    spec = get_spec("digits_seed")
    jobs = [TrainJob(key=UnitKey(c.model_id), config=c, architecture=spec.architecture, method="original", epochs=2,
                     lr=c.lr, batch_size=spec.batch_size, seed=c.seed) for c in spec.models()[:2]]
    heard = []
    trainer = ProcessTrainer(workers=2)
    try:
        results = list(trainer.run(jobs, load_dataset("digits", 28), on_epoch=lambda *update: heard.append(update)))
    finally:
        trainer.close()
    assert sorted(r.key.model_id for r in results) == [0, 1]
    assert sorted(heard) == [(1, 2, 1), (1, 2, 1), (2, 2, 1), (2, 2, 1)]  # (epoch, epochs, models) per worker


def test_a_killed_worker_is_one_clear_error_and_resume_finishes_the_build(tmp_path):
    """SIGKILL of a worker mid-stage: a WorkerError that says how to go on (not a traceback from the
    pool), and the resumed build completes the store."""
    spec = get_spec("digits_seed").with_overrides(model_subset=range(4), epochs=3)
    trainer = ProcessTrainer(workers=2)
    killed = []

    def kill_a_worker(epoch, epochs, models):
        # once: a second epoch report may arrive after the victim is gone (a flake under load once)
        if epoch == 1 and not killed and trainer._pool is not None:
            victim = next(iter(trainer._pool._processes.values()))
            killed.append(victim.pid)
            kill(victim.pid)

    try:
        with pytest.raises(WorkerError, match="--resume"):
            build_zoo(spec, tmp_path, stages=["original"], progress=False,
                      trainer=_WithEpochHook(trainer.run, kill_a_worker))
    finally:
        trainer.close()
    store, _ = build_zoo(spec, tmp_path, stages=["original"], resume=True, progress=False)
    assert store.manifest.populations["original"].status == "complete"
    assert sorted(store.states("original").model_id.unique()) == [0, 1, 2, 3]


def kill(pid: int) -> None:
    """SIGKILL ``pid``, which may have exited already (a test that kills must not race the process)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def gone(pid: int) -> bool:
    """The process has exited: no longer listed, or a zombie nobody reaped (an orphan in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except (FileNotFoundError, ProcessLookupError):
        return True


KILLED_DRIVER = """
import sys
from builders.build import build_zoo
from builders.executors import ProcessTrainer
from zoo_dataset.specs import get_spec

class Announcing(ProcessTrainer):  # prints the worker ids at each epoch a worker reports
    def run_chunks(self, chunks, data, on_epoch=None):
        def announce(*update):
            print(*sorted(p.pid for p in self._pool._processes.values()), flush=True)
        return super().run_chunks(chunks, data, announce)

if __name__ == "__main__":  # two 1-model chunks of 500 epochs: each worker trains for minutes
    spec = get_spec("digits_seed").with_overrides(model_subset=range(2), models_per_shard=1, epochs=500)
    build_zoo(spec, sys.argv[1], stages=["original"], progress=False, trainer=Announcing(workers=2))
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_workers_exit_when_their_driver_is_killed(tmp_path):
    """kill -9 of a 2-worker build: its workers (~0.5 GB each) do not train on for minutes as orphans.
    The wait below is a bound against hanging, not a speed requirement: the shares last far longer."""
    driver = subprocess.Popen([sys.executable, "-c", KILLED_DRIVER, str(tmp_path / "stores")],
                              stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    workers: list[int] = []
    try:
        for _ in range(2):  # two epoch reports: the workers are mid-share
            workers = [int(pid) for pid in driver.stdout.readline().split()]
        assert len(workers) == 2, "the build ended before both workers trained"
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 120
        while not all(gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(gone(pid) for pid in workers), "orphaned workers kept training"
    finally:
        driver.kill()
        for pid in workers:
            kill(pid)


class _WithEpochHook:
    """A trainer that calls ``hook`` on every epoch report of ``run``."""

    def __init__(self, run, hook):
        self.run_inner, self.hook = run, hook

    def run(self, jobs, data, on_epoch=None):
        return self.run_inner(jobs, data, on_epoch=self.hook)


def test_abandoned_run_stops_its_workers_at_once():
    """A caller that stops consuming (an error while staging, Ctrl-C) must not wait for the other
    shares: the workers are terminated mid-share."""
    spec = get_spec("digits_seed")
    configs = spec.models()[:4]
    jobs = [TrainJob(key=UnitKey(c.model_id), config=c, architecture=spec.architecture, method="original",
                     epochs=1 if c.model_id >= 2 else 30, lr=c.lr, batch_size=spec.batch_size, seed=c.seed)
            for c in configs]  # the two 1-epoch jobs group together: their share finishes first
    trainer = ProcessTrainer(workers=2)
    run = trainer.run(jobs, load_dataset("digits", 28))
    first = next(run)
    processes = list(trainer._pool._processes.values())
    run.close()
    assert first.key.model_id in (2, 3) and trainer._pool is None
    assert not any(p.is_alive() for p in processes)
    # killed by a signal (negative exit code), not left to finish the 30-epoch share and exit normally
    assert all(p.exitcode is not None and p.exitcode < 0 for p in processes)


def test_a_worker_or_ray_task_groups_its_batch_at_most_max_models(monkeypatch):
    """On cuda a build hands its store's recorded chunk to the trainer: the engine each worker or Ray
    task makes must group no more models than that, whatever memory that device has free."""
    spec = get_spec("digits_seed")
    jobs = [TrainJob(key=UnitKey(c.model_id), config=c, architecture=spec.architecture, method="original", epochs=1,
                     lr=c.lr, batch_size=spec.batch_size, seed=c.seed) for c in spec.models()[:3]]
    sizes = []
    original = PopulationEngine.run_group

    def run_group(self, group, *args, **kwargs):
        sizes.append(len(group))
        return original(self, group, *args, **kwargs)

    monkeypatch.setattr(PopulationEngine, "run_group", run_group)
    data = load_dataset("digits", 28)
    results = _train_batch("population", "cpu", jobs, data, max_models=1)
    assert sorted(r.key.model_id for r in results) == [0, 1, 2] and sizes == [1, 1, 1]
    sizes.clear()
    _train_batch("population", "cpu", jobs, data)
    assert sizes == [3]


def test_each_trainer_call_holds_a_chunk_for_every_worker():
    """A chunk trains whole in one worker: calls of one 64-model chunk each (the 256-model zoos'
    shards) once left the second worker idle through whole builds."""
    from builders.stages.base import UNITS_PER_BATCH, _calls

    def chunks(n_chunks: int, units: int) -> list[list[UnitKey]]:
        return [[UnitKey(c * units + u) for u in range(units)] for c in range(n_chunks)]

    big = chunks(4, UNITS_PER_BATCH)
    assert [len(call) for call in _calls(big)] == [1, 1, 1, 1]
    assert [len(call) for call in _calls(big, workers=2)] == [2, 2]
    assert [len(call) for call in _calls(chunks(3, 9 * UNITS_PER_BATCH), workers=2)] == [2, 1]
    small = chunks(16, 8)  # gathered to UNITS_PER_BATCH units as before
    assert [len(call) for call in _calls(small, workers=2)] == [8, 8]
    assert [k for call in _calls(big, workers=3) for chunk in call for k in chunk] == [k for c in big for k in c]
