"""A diverged model is real data, recorded as diverged: a learning rate of 1e300 gives NaN weights,
which the store keeps and flags per state (``diverged`` in the states tables, computed when the
unit is written), the build, the report and the card count, and ``drop_nonfinite`` leaves out."""

from __future__ import annotations

import hashlib
import json
import shutil

import pandas as pd
import pytest
from click.testing import CliRunner

from analysis import cli as report_cli
from builders.build import build_zoo
from loaders import ZooOriginalDataset
from zoo_dataset.specs import get_spec
from zoo_dataset.statistics import last_epoch_summary
from zoo_dataset.store import ZooStore

BLOWUP = """
[zoo.blowup]
dataset = "digits"
architecture = "cnn_s"
variant = "fixed"
description = "two models trained with a learning rate of 1e300"
epochs = 1
models_per_shard = 2
mp = { lr = 1e-3, epochs = 1, levels = [50] }
vd = { lr = 1e-3, epochs = 1 }

[zoo.blowup.factors]
seeds = [3]
activation = ["tanh", "relu"]
optimizer = ["sgd"]
lr = [1e300]
weight_decay = [0.0]
dropout = [0.0]
init = ["kaiming_uniform"]
"""


@pytest.fixture(scope="module")
def blown_up(tmp_path_factory):
    base = tmp_path_factory.mktemp("blowup")
    (base / "zoos.toml").write_text(BLOWUP)
    store, _ = build_zoo(get_spec("blowup", base / "zoos.toml"), base / "root", stages=["original", "card"],
                         progress=False)
    return store.zoo_dir


@pytest.fixture
def store(blown_up, tmp_path):
    copy = tmp_path / "blowup"
    shutil.copytree(blown_up, copy)
    return copy


def test_nan_weights_are_kept_and_flagged_per_state(store):
    reader = ZooStore(store)
    assert reader.verify() == []  # real data: nothing refused
    states = reader.states("original").sort_values(["model_id", "epoch"])
    assert states.diverged.dtype == bool
    assert states.diverged.tolist() == [False, True, False, True]  # epoch 0 is the (finite) init
    assert pd.isna(reader.weights("original", 0, -1)).any()  # stored as trained


def test_the_build_summary_the_report_and_the_card_count_diverged_models(store, tmp_path):
    summary = last_epoch_summary({"original": ZooStore(store).states("original")})
    assert summary.diverged.tolist() == [2]
    result = CliRunner().invoke(report_cli.main, ["--zoo", str(store), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "diverged 2" in result.output
    assert "2 diverged" in (tmp_path / "report" / "report.md").read_text()
    row = next(line for line in (store / "README.md").read_text().splitlines() if line.startswith("| original |"))
    assert row.endswith("| 2 |")


def test_drop_nonfinite_uses_the_recorded_flag(store, monkeypatch):
    reads = []
    monkeypatch.setattr(ZooStore, "read", lambda self, *args: reads.append(args))
    dataset = ZooOriginalDataset(store, split=None, epoch=None, drop_nonfinite=True)
    assert reads == []  # no weight was read to find the diverged states
    assert dataset.dropped["states"] == 2 and len(dataset) == 2
    monkeypatch.undo()
    assert [int(dataset[i]["epoch"]) for i in range(len(dataset))] == [0, 0]


def test_a_states_table_without_the_flag_gets_it_from_the_arrays(store):
    """Tables written before the flag existed: computed on read from the shard, as the writer does."""
    recorded = ZooStore(store).states("original")
    manifest = json.loads((store / "manifest.json").read_text())
    shard = manifest["populations"]["original"]["shards"][0]
    path = store / shard["states_file"]
    pd.read_parquet(path).drop(columns=["diverged"]).to_parquet(path, index=False)
    shard.update(states_sha256=hashlib.sha256(path.read_bytes()).hexdigest(), states_bytes=path.stat().st_size)
    (store / "manifest.json").write_text(json.dumps(manifest))
    computed = ZooStore(store).states("original")
    assert computed.diverged.tolist() == recorded.diverged.tolist()
    assert ZooOriginalDataset(store, split=None, epoch=None, drop_nonfinite=True).dropped["states"] == 2
