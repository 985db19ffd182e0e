"""A Ray build of the embedded zoo holds the same store content as a local build; a task Ray no
longer retries and an unreachable cluster stop the build with one line.

Runs on a local Ray instance (2 CPUs); skipped where Ray is not installed (it is an optional extra).
A cluster of two nodes, one of them lost mid-build, is tests/test_ray_cluster.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
from _processes import running_task
from test_resume_chunks import same_population

import builders.executors
from builders.build import build_zoo
from builders.executors import RayTrainer
from zoo_dataset.data import load_dataset
from zoo_dataset.errors import WorkerError, ZooSpecError
from zoo_dataset.specs import get_spec
from zoo_dataset.training import TrainJob, UnitKey
from zoo_dataset.training.engine import PopulationEngine

# a grouped convolution's rounding depends on how many models share it (and Adam amplifies it); models
# train in the store's fixed chunks (here [0, 1] and [2]) wherever they run, so stores agree bit for bit

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'zoo-twins[ray]'); not installed")

SPEC = {"model_subset": range(3), "epochs": 1, "mp_epochs": 1, "mp_levels": (0.5,), "vd_epochs": 1,
        "models_per_shard": 2}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_build_equals_local_build(local_ray, tmp_path):
    spec = get_spec("digits_seed").with_overrides(**SPEC)
    local, _ = build_zoo(spec, tmp_path / "local", progress=False, trainer=PopulationEngine())
    remote, _ = build_zoo(spec, tmp_path / "ray", progress=False, trainer=RayTrainer())
    assert remote.populations == local.populations == ["original", "mp", "vd"]
    for population in local.populations:
        levels = local.population(population).levels
        for model_id in [m.model_id for m in spec.models()]:
            for level in levels:
                for name in local.population(population).arrays:
                    np.testing.assert_array_equal(remote.array(name, population, model_id, slice(None), level),
                                                  local.array(name, population, model_id, slice(None), level))
        numeric = local.states(population).select_dtypes("number").columns
        columns = [c for c in numeric if c not in ("shard", "row")]
        ours = remote.states(population).sort_values(["model_id", "level", "epoch"])[columns]
        theirs = local.states(population).sort_values(["model_id", "level", "epoch"])[columns]
        np.testing.assert_allclose(ours.to_numpy(float), theirs.to_numpy(float), equal_nan=True)
    remote.verify()


def _kill_first_training_task(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first worker process of this process's Ray instance seen running a training task."""
    while not stop.is_set():
        for pid in running_task(os.getpid(), "_train_batch"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # the task ended meanwhile: wait for the next one
                continue
            killed.append(pid)
            return
        stop.wait(0.05)


@pytest.mark.skipif(sys.platform != "linux", reason="finds the task's worker process in /proc")
def test_a_task_ray_no_longer_retries_is_one_line_and_resume_completes(local_ray, tmp_path, monkeypatch):
    """A worker killed mid-task once its retries are spent (none here; a lost node behaves alike):
    a WorkerError that says how to go on, not Ray's traceback; --resume then completes the store,
    equal to an uninterrupted local build bit for bit."""
    monkeypatch.setattr(builders.executors, "RAY_TASK_RETRIES", 0)
    spec = get_spec("digits_seed").with_overrides(**SPEC)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_training_task, args=(stop, killed))
    killer.start()
    try:
        with pytest.raises(WorkerError, match="after 0 retries .*--resume") as failure:
            build_zoo(spec, tmp_path / "ray", stages=["original"], progress=False, trainer=RayTrainer())
    finally:
        stop.set()
        killer.join()
    assert killed and "\n" not in str(failure.value)
    resumed, _ = build_zoo(spec, tmp_path / "ray", stages=["original"], resume=True, progress=False,
                           trainer=RayTrainer())
    local, _ = build_zoo(spec, tmp_path / "local", stages=["original"], progress=False, trainer=PopulationEngine())
    assert resumed.manifest.populations["original"].status == "complete"
    same_population(resumed, local, "original")


def test_an_unreachable_cluster_is_one_line(tmp_path):
    """zoo-build --executor ray --address of a head that is not running: one line at once (Ray's
    own connect retries for minutes), the runtime exit code, no store."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens on it once closed
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, "-c", "from builders.cli import main; main()", "--zoo", "digits_seed",
                             "--models", "0", "--epochs", "1", "--stages", "original", "--root", str(tmp_path),
                             "--executor", "ray", "--address", f"127.0.0.1:{port}", "--quiet"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: cannot reach the Ray cluster at 127.0.0.1:{port} (Connection refused); "
                                     "is its head node running (ray start --head)?")
    assert not (tmp_path / "digits_seed").exists()


def test_a_toolkit_error_in_a_task_is_raised_as_itself(local_ray):
    """An error of ours raised inside a task (here an MP job sent without its mask) reaches
    the caller as the local engine raises it, one line, not as Ray's wrapper with the remote traceback."""
    spec = get_spec("digits_seed")
    config = spec.models()[0]
    job = TrainJob(key=UnitKey(config.model_id), config=config, architecture=spec.architecture, method="mp", epochs=1,
                   lr=config.lr, batch_size=spec.batch_size, seed=config.seed)
    with pytest.raises(ZooSpecError, match="mp job for model 0 needs a mask") as raised:
        list(RayTrainer().run([job], load_dataset("digits", 28)))
    assert type(raised.value) is ZooSpecError and "\n" not in str(raised.value)
