"""End-to-end builds of the embedded zoo: accuracy, round trip, determinism, kill + resume, bad input."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from builders.build import build_zoo
from builders.cli import main
from zoo_dataset.counter_rng import GENERATOR
from zoo_dataset.data import load_dataset
from zoo_dataset.errors import StoreError
from zoo_dataset.metrics import evaluate
from zoo_dataset.store import ZooStore
from zoo_dataset.store.layout_on_disk import STAGING
from zoo_dataset.store.manifest import Manifest
from zoo_dataset.training import ReferenceTrainer


def test_originals_learn_and_weights_reproduce_recorded_accuracy(original_store):
    states = original_store.states("original")
    final = states[states.epoch == states.epoch.max()]
    assert final.test_acc.mean() > 0.5  # ten classes: chance is 0.1
    first = states[states.epoch == 0]
    assert (final.test_acc.values > first.test_acc.values).all()
    data = load_dataset("digits", 28)
    for row in final.itertuples():
        model = original_store.model("original", row.model_id, epoch=-1)
        _, acc, _ = evaluate(model, data.test_x, data.test_y)
        assert acc == pytest.approx(row.test_acc, abs=1e-6)


def test_same_spec_and_seed_give_the_same_weights(original_store, small_spec, tmp_path):
    spec = small_spec.with_overrides(model_subset=[1], epochs=1)
    a, _ = build_zoo(spec, tmp_path / "a", stages=["original"], progress=False)
    b, _ = build_zoo(spec, tmp_path / "b", stages=["original"], progress=False)
    whole = slice(None)
    np.testing.assert_array_equal(a.weights("original", 1, epoch=whole), b.weights("original", 1, epoch=whole))
    # the 4-model build followed the same path; batching 4 models instead of 1 only changes rounding
    np.testing.assert_array_equal(a.weights("original", 1, epoch=0), original_store.weights("original", 1, epoch=0))
    np.testing.assert_allclose(a.weights("original", 1, epoch=1), original_store.weights("original", 1, epoch=1),
                               atol=1e-4)  # as tests/test_engine.py: grouped-conv rounding compounds over the steps


def run_cli(*args):
    """zoo-build in a subprocess with one torch thread, like the test process (same float rounding)."""
    return subprocess.Popen([sys.executable, "-m", "builders.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_killed_build_resumes_to_the_same_store(tmp_path, small_spec, one_thread):
    # the reference trainer finishes models one by one, so the kill lands between finished models
    args = ["--zoo", "digits_seed", "--models", "0-3", "--epochs", "2", "--stages", "original", "--quiet",
            "--engine", "reference"]
    out = tmp_path / "killed"
    proc = run_cli(*args, "--out", str(out))
    staging = out / "digits_seed" / STAGING / "original"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not list(staging.glob("*.h5")):
        time.sleep(0.05)
    assert proc.poll() is None, "build ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "digits_seed" / "original").exists() or not list((out / "digits_seed" / "original").glob("*.h5"))
    resumed = run_cli(*args, "--out", str(out), "--resume")
    _, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err
    store = ZooStore(out / "digits_seed")
    assert store.population("original").status == "complete"
    uninterrupted, _ = build_zoo(small_spec, tmp_path / "whole", stages=["original"], trainer=ReferenceTrainer(),
                                 progress=False)
    for model_id in range(4):
        np.testing.assert_array_equal(store.weights("original", model_id, epoch=slice(None)),
                                      uninterrupted.weights("original", model_id, epoch=slice(None)))
    assert store.states("original").drop(columns=["shard", "row"]).equals(
        uninterrupted.states("original").drop(columns=["shard", "row"]))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--zoo", "mnist_sed"], "unknown zoo 'mnist_sed' (did you mean mnist_seed"),
        (["--zoo", "digits_seed", "--mp-levels", "0,50"], "out of range"),
        (["--zoo", "digits_seed", "--models", "0-x"], "--models"),
        (["--zoo", "digits_seed", "--stages", "original,bogus"], "unknown stage"),
        (["--zoo", "digits_seed", "--vd-variant", "elbow"], "'elbow' is not one of 'cnn_ard', 'elbo'"),
        (["--zoo", "digits_seed", "--bogus"], "No such option '--bogus'"),
    ],
)
def test_bad_input_gives_one_clear_line(args, message, tmp_path):
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_zoo_without_local_data_fails_with_a_clear_line(tmp_path):
    result = CliRunner().invoke(main, ["--zoo", "mnist_seed", "--out", str(tmp_path), "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and "mnist" in line.lower() and ("--data-dir" in line or "ZOO_TWINS_DATA" in line)
    assert not (tmp_path / "mnist_seed").exists()


def test_list_shows_every_zoo_and_data_availability():
    result = CliRunner().invoke(main, ["--list"])
    assert result.exit_code == 0
    assert "digits_seed" in result.output and "cifar10_l_random" in result.output
    row = next(line for line in result.output.splitlines() if line.startswith("digits_seed"))
    assert row.rstrip().endswith("available")


def test_store_records_the_generator_and_refuses_a_resume_with_another(tmp_path, small_spec):
    spec = small_spec.with_overrides(model_subset=[0], epochs=1)
    store, _ = build_zoo(spec, tmp_path, stages=["original"], progress=False)
    assert store.manifest.populations["original"].generator == GENERATOR
    # as if an older toolkit (per-model Mersenne Twisters) had started the population and was killed
    manifest = Manifest.load(store.zoo_dir)
    manifest.populations["original"].generator, manifest.populations["original"].status = None, "partial"
    manifest.save(store.zoo_dir)
    with pytest.raises(StoreError, match="started with the random generator per-model Mersenne.*another --root"):
        build_zoo(spec, tmp_path, stages=["original"], resume=True, progress=False)


def test_vd_twins_are_deterministic_run_to_run(tmp_path, small_spec):
    """Counter-based noise: two builds of the same twins store the same bits."""
    spec = small_spec.with_overrides(model_subset=[2], epochs=1, vd_epochs=1)
    stores = [build_zoo(spec, tmp_path / run, stages=["original", "vd"], progress=False)[0] for run in "ab"]
    whole = slice(None)
    for name in ("weights", "log_alpha", "masks"):
        np.testing.assert_array_equal(stores[0].array(name, "vd", 2, epoch=whole),
                                      stores[1].array(name, "vd", 2, epoch=whole))
    states = [s.states("vd").drop(columns=["shard", "row"]) for s in stores]
    assert states[0].equals(states[1])
