"""zoo-bench's core: versioned split files, the samples of tasks 2 and 3, the scores of every task
against direct scikit-learn and scipy computations, the report, its record in the store (card
section, manifest, verify) and the command on a tiny real build.

The property and mask baselines live in their own modules; here the tasks run stand-in predictors
defined below (the protocol is all they share), and task 3's scorer is replaced by a stand-in that
calls the predictor as the real one does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from _analysis_store import synthetic_store
from click.testing import CliRunner
from scipy.stats import kendalltau
from sklearn.metrics import r2_score

from analysis.bench import cli as bench_cli
from analysis.bench.predictors import MaskPredictor, PropertyPredictor
from analysis.bench.report import markdown, record_in_store, render, results_document, write_outputs
from analysis.bench.samples import Population, population_samples
from analysis.bench.splits import load_split, make_split, parse_split, save_split
from analysis.bench.tasks import combine_folds, last_rows, run_benchmark
from analysis.bench.twins import TRAJECTORY_BYTES, mask_samples, trajectory_epochs, twin_samples
from builders.stages.card import write_card
from zoo_dataset.errors import ChecksumError, StoreError, ZooError, ZooSpecError
from zoo_dataset.sparsify.magnitude import global_magnitude_mask, prune_count
from zoo_dataset.store import ZooStore
from zoo_dataset.store.tables import model_splits


class MeanStandIn:
    """The training mean of every target."""

    name = "mean"

    def fit(self, train):
        self.means = {k: float(v.mean()) for k, v in train.targets.items()}
        return self

    def predict(self, samples):
        return {k: np.full(len(samples), m) for k, m in self.means.items()}


class LinearStandIn:
    """Least squares on two statistics of the flat weights (deterministic, cheap)."""

    name = "linear"

    @staticmethod
    def features(samples):
        w = samples.weights.astype(np.float64)
        return np.stack([w.std(1), np.abs(w).mean(1), (w == 0).mean(1), np.ones(len(w))], axis=1)

    def fit(self, train):
        x = self.features(train)
        self.coef = {k: np.linalg.lstsq(x, v, rcond=None)[0] for k, v in train.targets.items()}
        return self

    def predict(self, samples):
        x = self.features(samples)
        return {k: x @ c for k, c in self.coef.items()}


class NoisyStandIn(MeanStandIn):
    """The mean plus noise from numpy's global generator: its numbers follow the run's seed."""

    name = "noisy"

    def predict(self, samples):
        return {k: m + np.random.normal(0, 0.1, len(samples)) for k, m in self.means.items()}


class MagnitudeStandIn:
    """Global magnitude pruning of each original."""

    name = "magnitude"

    def fit(self, train):
        self.fitted_on = sorted(set(train.model_ids.tolist()))
        return self

    def keep(self, originals, layout, sparsity):
        return np.stack([global_magnitude_mask(w, layout, sparsity) for w in originals])


def fake_score_masks(store, predictor, held_out, sparsities, data):
    """Task 3's scorer as documented (rows per sparsity and metric); IoU with the VD twin computed
    here, the "accuracy" a stand-in (the share of weights kept), so the test needs no network."""
    is_weight = held_out.layout.weight_mask()
    rows = []
    for sparsity in sparsities:
        keep = predictor.keep(held_out.weights, held_out.layout, sparsity)
        pruned, true = ~keep[:, is_weight], ~held_out.extra["vd_keep"][:, is_weight]
        iou = (pruned & true).sum(1) / np.maximum((pruned | true).sum(1), 1)
        kept = keep[:, is_weight].mean(1)
        for metric, values in (("accuracy", kept), ("iou", iou)):
            rows.append({"task": "masks", "population": "original", "target": metric, "predictor": predictor.name,
                         "metric": metric, "over": "models", "sparsity": sparsity, "value": float(values.mean()),
                         "std": float(values.std()), "n_models": len(values), "n_states": len(values),
                         "seconds": 0.0})
    return rows


@pytest.fixture
def fake_mask_scores(monkeypatch):
    """``analysis.bench.mask_scores`` replaced by :func:`fake_score_masks`."""
    module = types.ModuleType("analysis.bench.mask_scores")
    module.score_masks = fake_score_masks
    monkeypatch.setitem(sys.modules, "analysis.bench.mask_scores", module)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("bench"), n_models=10, original_epochs=3, mp_epochs=2,
                           vd_epochs=3, mp_levels=(0.5, 0.9))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """digits_random's grid: 16 models of 4 activations x 2 inits x 2 optimizers."""
    return synthetic_store(tmp_path_factory.mktemp("grid"), n_models=16, zoo="digits_random", mp_levels=(0.5,))


# ---------------------------------------------------------------- split files


def test_the_split_id_is_the_hash_of_its_canonical_json_on_every_copy(store, tmp_path):
    split = make_split(store, "random", seed=3, test_fraction=0.3)
    canonical = json.dumps(split.to_dict(), sort_keys=True, separators=(",", ":"))
    assert split.id == "split-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]
    assert make_split(store, "random", seed=3, test_fraction=0.3).id == split.id  # made again: the same
    copy = tmp_path / "copy"
    shutil.copytree(store.zoo_dir, copy)
    assert make_split(ZooStore(copy), "random", seed=3, test_fraction=0.3).id == split.id
    path = save_split(split, tmp_path)
    assert path.name == f"{split.id}.json" and load_split(path) == split
    # the file's layout is free: the id hashes the content
    path.write_text(json.dumps(split.to_dict(), indent=4))
    assert load_split(path).id == split.id
    assert make_split(store, "random", seed=4, test_fraction=0.3).id != split.id


def test_the_kinds_split_by_model(store):
    table = store.models()
    split = make_split(store, "store")
    assert split.seed == store.spec.split_seed and split.k is None and split.test_fraction is None
    (fold,) = split.folds
    assert list(fold.train) == sorted(table.model_id[table.split.isin(["train", "val"])])
    assert list(fold.test) == sorted(table.model_id[table.split == "test"])

    (fold,) = make_split(store, "random", seed=1, test_fraction=0.3).folds
    assert len(fold.test) == 3 and sorted(fold.train + fold.test) == list(range(10))
    assert not set(fold.train) & set(fold.test)

    kfold = make_split(store, "kfold", seed=2, k=4)
    from loaders.splits import model_folds

    assert [(list(f.train), list(f.test)) for f in kfold.folds] == model_folds(range(10), 4, 2)
    assert sorted(m for f in kfold.folds for m in f.test) == list(range(10))


def test_filters_choose_models_and_states(grid):
    split = make_split(grid, "store", activation=["relu", "gelu"], init=["uniform"], epochs=[0, 2, 1],
                       levels=[50])
    chosen = grid.models().set_index("model_id").loc[list(split.folds[0].train + split.folds[0].test)]
    assert set(chosen.activation) == {"relu", "gelu"} and set(chosen.init) == {"uniform"}
    assert sorted(chosen.index) == [8, 10, 12, 14]
    assert split.filters == {"activation": ["gelu", "relu"], "init": ["uniform"], "epochs": [0, 1, 2],
                             "levels": [0.5]}
    assert "activation gelu,relu" in split.describe()
    for kwargs, message in (({"activation": ["swish"]}, "activation swish is not in this store"),
                            ({"epochs": [99]}, "epoch 99 is not recorded"),
                            ({"levels": [0.7]}, "MP level 0.7 is not stored"),
                            ({"kind": "kfold", "k": 9, "activation": ["relu"]}, "k = 9 folds")):
        with pytest.raises(ZooSpecError, match=message):
            make_split(grid, **kwargs)


def test_epoch_and_level_filters_reach_the_tasks(grid):
    split = make_split(grid, "random", seed=0, test_fraction=0.25, epochs=[1, 2])
    run = run_benchmark(grid, split, [MeanStandIn()], tasks=("properties",))
    states = {r["population"]: r["n_states"] for r in run.rows if r["over"] == "states"}
    assert states["original"] == 4 * 2 and states["vd"] == 4 * 2 and states["mp@0.5"] == 4 * 2
    models = [r for r in run.rows if r["over"] == "models" and r["target"] == "epoch"]
    assert all(r["value"] is None for r in models)  # every model's last chosen state is epoch 2: no spread


def _tampered(path, edit):
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def test_an_edited_split_file_is_refused_in_one_line(store, tmp_path):
    split = make_split(store, "random", seed=1, test_fraction=0.3)
    path = save_split(split, tmp_path)
    _tampered(path, lambda raw: raw["folds"][0].update(test=raw["folds"][0]["test"][:-1]))
    with pytest.raises(ZooSpecError, match="changed after it was written") as caught:
        load_split(path)
    assert "\n" not in str(caught.value)
    renamed = path.rename(tmp_path / "mine.json")  # under a name of one's own, the content is checked alone
    assert load_split(renamed).id != split.id


@pytest.mark.parametrize("edit, message", [
    (lambda raw: raw.update(seed=True), "seed is not an integer"),
    (lambda raw: raw.update(version=2), "version is 2"),
    (lambda raw: raw.update(format="other"), "not a zoo-bench split"),
    (lambda raw: raw.pop("filters"), "lacks filters"),
    (lambda raw: raw.update(extra=1), "unknown keys extra"),
    (lambda raw: raw["folds"][0].update(test=[5, 1]), r"folds\[0\].test is not a non-empty sorted list"),
    (lambda raw: raw["folds"][0].update(test=raw["folds"][0]["train"][:1]), "holds a model on both sides"),
    (lambda raw: raw.update(k=3), "k must be null"),
    (lambda raw: raw.update(test_fraction=1.5), "test_fraction must be a number strictly between 0 and 1"),
    (lambda raw: raw["filters"].update(levels=[0.9, 0.5]), "filters.levels is neither null"),
    (lambda raw: raw.update(store_models_sha256="00"), "store_models_sha256 is not a sha256"),
    (lambda raw: raw.update(zoo="../up"), "zoo is not a zoo name"),
])
def test_a_malformed_split_is_refused_naming_the_field(store, edit, message):
    raw = make_split(store, "random", seed=1, test_fraction=0.3).to_dict()
    edit(raw)
    with pytest.raises(ZooSpecError, match=message):
        parse_split(raw, "split file x.json")


def test_a_kfold_split_must_hold_each_model_out_once(store):
    raw = make_split(store, "kfold", seed=0, k=3).to_dict()
    raw["folds"][1] = dict(raw["folds"][0])  # a valid fold, twice: fold 1's models are never held out
    with pytest.raises(ZooSpecError, match="exactly one fold"):
        parse_split(raw)


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_a_split_file_that_is_not_a_split_is_one_line(tmp_path, content):
    path = tmp_path / "split.json"
    path.write_bytes(content)
    with pytest.raises(ZooSpecError) as caught:
        load_split(path)
    assert "\n" not in str(caught.value) and "split file" in str(caught.value)


def test_a_split_of_another_store_is_refused(store, tmp_path):
    other = synthetic_store(tmp_path, n_models=6, populations=("original",))
    split = make_split(other, "random", seed=0)
    with pytest.raises(ZooSpecError, match="was made for the models of digits_seed") as caught:
        split.check_store(store)
    assert "\n" not in str(caught.value)
    with pytest.raises(ZooSpecError, match="make a split of this store"):
        run_benchmark(store, split, [MeanStandIn()])


# ---------------------------------------------------------------- samples of tasks 2 and 3


def test_twin_samples_read_each_originals_last_epoch_and_its_twins_last_states(store):
    samples = twin_samples(store, [0, 3, 5])
    assert list(samples.model_ids) == [0, 3, 5] and list(samples.epochs) == [3, 3, 3]
    assert list(samples.targets) == ["mp@0.5/test_acc", "mp@0.9/test_acc", "vd/test_acc", "vd/sparsity"]
    mp, vd = store.states("mp"), store.states("vd")
    for i, m in enumerate([0, 3, 5]):
        np.testing.assert_array_equal(samples.weights[i], store.weights("original", m, -1))
        for level in (0.5, 0.9):
            row = mp[(mp.model_id == m) & np.isclose(mp.level, level) & (mp.epoch == 2)]
            assert samples.targets[f"mp@{level:g}/test_acc"][i] == row.test_acc.item()
        row = vd[(vd.model_id == m) & (vd.epoch == 3)]
        assert samples.targets["vd/test_acc"][i] == row.test_acc.item()
        assert samples.targets["vd/sparsity"][i] == row.sparsity.item()
    assert list(twin_samples(store, [0, 3], levels=[0.9]).targets) == ["mp@0.9/test_acc", "vd/test_acc",
                                                                       "vd/sparsity"]


def test_mask_samples_hold_the_vd_twins_last_log_alphas_and_masks(store):
    samples = mask_samples(store, [2, 7])
    for i, m in enumerate([2, 7]):
        np.testing.assert_array_equal(samples.weights[i], store.weights("original", m, -1))
        np.testing.assert_array_equal(samples.extra["vd_log_alpha"][i], store.array("log_alpha", "vd", m, 3))
        np.testing.assert_array_equal(samples.extra["vd_keep"][i], store.array("masks", "vd", m, 3))
    assert samples.extra["vd_keep"].dtype == bool and samples.extra["vd_log_alpha"].dtype == np.float32
    # the trajectory, for predictors that aim at the VD epoch nearest their target sparsity
    vd = store.states("vd")
    for i, m in enumerate([2, 7]):
        assert samples.extra["vd_epochs"][i].tolist() == [0, 1, 2, 3]
        for e in range(4):
            np.testing.assert_array_equal(samples.extra["vd_log_alpha_epochs"][i, e],
                                          store.array("log_alpha", "vd", m, e))
            assert samples.extra["vd_sparsity_epochs"][i, e] == vd[(vd.model_id == m) & (vd.epoch == e)].sparsity.item()


def test_the_trajectory_is_thinned_to_fit_memory():
    assert trajectory_epochs(11, 256, 2464) == list(range(11))
    few = trajectory_epochs(26, 30_000, 4970)  # the Small CNN Zoo: 15 GB for every epoch
    assert few[-1] == 25 and 1 <= len(few) < 26 and 4 * 30_000 * 4970 * len(few) <= TRAJECTORY_BYTES


def test_the_stand_ins_follow_the_protocols():
    assert isinstance(LinearStandIn(), PropertyPredictor) and isinstance(MagnitudeStandIn(), MaskPredictor)


# ---------------------------------------------------------------- scores


def _direct(fit_on, test, target, rows=None):
    predicted = LinearStandIn().fit(fit_on).predict(test)[target]
    y = test.targets[target]
    if rows is not None:
        y, predicted = y[rows], predicted[rows]
    return r2_score(y, predicted), kendalltau(y, predicted).statistic


@pytest.fixture(scope="module")
def random_split(store):
    return make_split(store, "random", seed=5, test_fraction=0.4)


@pytest.fixture(scope="module")
def run(store, random_split):
    return run_benchmark(store, random_split, [MeanStandIn(), LinearStandIn()], tasks=("properties", "twins"))


def _value(rows, **key):
    (row,) = [r for r in rows if all(r.get(k) == v for k, v in key.items())]
    return row


def test_property_scores_are_sklearns_r2_and_scipys_tau(store, random_split, run):
    (fold,) = random_split.folds
    population = Population("mp", 0.9)
    train = population_samples(store, population, fold.train)
    test = population_samples(store, population, fold.test)
    last = last_rows(test)
    assert len(last) == 4 and set(test.epochs[last]) == {2}
    for target in ("test_acc", "ggap", "sparsity"):
        for over, rows in (("states", None), ("models", last)):
            r2, tau = _direct(train, test, target, rows)
            key = {"task": "properties", "population": "mp@0.9", "target": target, "predictor": "linear",
                   "over": over}
            assert _value(run.rows, metric="r2", **key)["value"] == pytest.approx(r2, rel=1e-9, abs=1e-12)
            assert _value(run.rows, metric="kendall_tau", **key)["value"] == pytest.approx(tau, abs=1e-12)
            assert _value(run.rows, metric="r2", **key)["n_states"] == (len(test) if rows is None else 4)
    # a target without spread has no score; a constant prediction has no tau
    assert _value(run.rows, task="properties", population="original", target="sparsity", predictor="linear",
                  metric="r2", over="states")["value"] is None
    assert _value(run.rows, task="properties", population="vd", target="test_acc", predictor="mean",
                  metric="kendall_tau", over="states")["value"] is None


def test_twin_scores_are_over_held_out_models(store, random_split, run):
    (fold,) = random_split.folds
    train, test = twin_samples(store, fold.train), twin_samples(store, fold.test)
    rows = [r for r in run.rows if r["task"] == "twins"]
    assert {r["over"] for r in rows} == {"models"} and {r["n_models"] for r in rows} == {4}
    for target in test.targets:
        r2, tau = _direct(train, test, target)
        key = {"task": "twins", "target": target, "predictor": "linear"}
        assert _value(rows, metric="r2", **key)["value"] == pytest.approx(r2, rel=1e-9, abs=1e-12)
        assert _value(rows, metric="kendall_tau", **key)["value"] == pytest.approx(tau, abs=1e-12)


def test_the_same_split_and_seed_give_the_same_numbers(store, random_split):
    def values(seed, predictors):
        rows = run_benchmark(store, random_split, predictors, tasks=("twins",), seed=seed).rows
        return {(r["target"], r["predictor"], r["metric"]): r["value"] for r in rows}

    first = values(7, [NoisyStandIn()])
    assert values(7, [NoisyStandIn()]) == first
    assert values(8, [NoisyStandIn()]) != first
    # each fit starts from the seed: a predictor beside it changes none of its numbers
    beside = values(7, [LinearStandIn(), NoisyStandIn()])
    assert {k: v for k, v in beside.items() if k[1] == "noisy"} == first


def test_kfold_rows_hold_the_mean_over_folds(store):
    split = make_split(store, "kfold", seed=1, k=3)
    rows = run_benchmark(store, split, [LinearStandIn()], tasks=("twins",)).rows
    row = _value(rows, target="vd/test_acc", metric="r2")
    direct = [_direct(twin_samples(store, f.train), twin_samples(store, f.test), "vd/test_acc")[0]
              for f in split.folds]
    assert row["folds"] == pytest.approx(direct, rel=1e-9)
    assert row["value"] == pytest.approx(np.mean(direct), rel=1e-9) and row["n_models"] == 10


def test_mask_rows_over_folds_pool_every_held_out_model():
    folds = [[{"task": "masks", "population": "original", "target": "iou", "predictor": "m", "metric": "iou",
               "over": "models", "sparsity": 0.5, "value": float(np.mean(v)), "std": float(np.std(v)),
               "n_models": len(v), "n_states": len(v), "seconds": 1.0, "fit_seconds": 0.5}]
             for v in ([0.1, 0.3], [0.5, 0.6, 0.9])]
    (row,) = combine_folds(folds)
    everyone = [0.1, 0.3, 0.5, 0.6, 0.9]
    assert row["value"] == pytest.approx(np.mean(everyone)) and row["std"] == pytest.approx(np.std(everyone))
    assert row["n_models"] == 5 and row["seconds"] == 2.0 and row["fit_seconds"] == 1.0


def test_task_3_fits_on_the_training_models_and_scores_held_out_originals(store, random_split, fake_mask_scores):
    run = run_benchmark(store, random_split, mask_predictors=[MagnitudeStandIn()], tasks=("masks",),
                        sparsities=(0.5, 0.9))
    (fold,) = random_split.folds
    held_out = mask_samples(store, fold.test)
    assert [(r["sparsity"], r["metric"]) for r in run.rows] == [(0.5, "accuracy"), (0.5, "iou"), (0.9, "accuracy"),
                                                                 (0.9, "iou")]
    is_weight = store.layout.weight_mask()
    keep = np.stack([global_magnitude_mask(w, store.layout, 0.9) for w in held_out.weights])[:, is_weight]
    true = ~held_out.extra["vd_keep"][:, is_weight]
    iou = ((~keep & true).sum(1) / (~keep | true).sum(1)).mean()
    assert _value(run.rows, sparsity=0.9, metric="iou")["value"] == pytest.approx(iou)
    assert all(r["predictor"] == "magnitude" and r["fit_seconds"] >= 0 for r in run.rows)


def test_a_predictor_that_predicts_too_little_is_named(store, random_split):
    class Broken(MeanStandIn):
        name = "broken"

        def predict(self, samples):
            return {k: v[:-1] for k, v in super().predict(samples).items()}

    with pytest.raises(ZooError, match="predictor broken gave"):
        run_benchmark(store, random_split, [Broken()], tasks=("twins",))
    with pytest.raises(ZooSpecError, match="share a name"):
        run_benchmark(store, random_split, [MeanStandIn(), MeanStandIn()], tasks=("twins",))


# ---------------------------------------------------------------- report and store record


@pytest.fixture(scope="module")
def document(store, random_split, run):
    return results_document(store, random_split, run, quick=True)


def test_the_results_json_records_versions_split_seeds_and_every_row(document, random_split, run, tmp_path):
    files = render(document)
    doc = json.loads(files[".json"])
    assert doc["split"] == random_split.id and doc["seed"] == 0 and doc["quick"] is True
    assert {"zoo-twins", "torch", "numpy", "scikit-learn", "scipy", "nfn"} <= set(doc["versions"])
    assert doc["rows"] == json.loads(json.dumps(run.rows)) and set(doc["seconds"]) == {"properties", "twins"}
    assert doc["run"].startswith(f"bench-{random_split.id[6:]}-s0-")
    assert files[".png"][:8] == b"\x89PNG\r\n\x1a\n"
    odd = {**document, "rows": [{**document["rows"][0], "value": float("nan"), "n_models": np.int64(3)}]}
    (row,) = json.loads(render(odd)[".json"])["rows"]  # JSON has no NaN; numpy scalars are plain numbers
    assert row["value"] is None and row["n_models"] == 3
    paths = write_outputs(document, random_split, tmp_path, files)
    assert sorted(p.name for p in paths) == sorted([f"{doc['run']}.json", f"{doc['run']}.md", f"{doc['run']}.png",
                                                    f"{random_split.id}.json"])
    assert load_split(tmp_path / f"{random_split.id}.json") == random_split


def test_the_markdown_table_shows_r2_and_tau_side_by_side(document, run):
    text = markdown(document)
    r2 = _value(run.rows, task="twins", target="vd/test_acc", predictor="linear", metric="r2")["value"]
    tau = _value(run.rows, task="twins", target="vd/test_acc", predictor="linear", metric="kendall_tau")["value"]
    header = next(line for line in text.splitlines() if line.startswith("| predictor | mp@0.5/test_acc"))
    row = next(line for line in text.splitlines() if line.startswith("| linear | ") and "/" in line)
    cell = row.split(" | ")[header.split(" | ").index("vd/test_acc")]
    assert cell == f"{100 * r2:.1f} / {tau:.3f}"
    assert "| mp@0.9 | mean | " in text and "#### Task 1: properties from weights" in text


@pytest.fixture
def writable(store, tmp_path):
    copy = tmp_path / "root" / store.manifest.zoo
    shutil.copytree(store.zoo_dir, copy)
    return copy


def test_the_store_records_the_run_in_its_card_and_verify_checks_it(writable, random_split, document):
    written = record_in_store(writable, random_split, document)
    assert written[0] == f"bench/splits/{random_split.id}.json"
    store = ZooStore(writable)
    assert set(written) <= set(store.manifest.card_files) and store.verify() == []
    card = (writable / "README.md").read_text()
    section = card[card.index("## Benchmarks"):card.index("## Citation")]
    assert f"`{random_split.id}`" in section and f"zoo-bench run `{document['run']}`" in section
    assert "#### Task 2: twin prediction" in section
    # a card rewritten later (zoo-build --stages card) keeps the section and the entries
    write_card(ZooStore(writable))
    store = ZooStore(writable)
    assert set(written) <= set(store.manifest.card_files) and "## Benchmarks" in (writable / "README.md").read_text()
    # the same run again replaces its own files
    assert record_in_store(writable, random_split, document) == written and ZooStore(writable).verify() == []
    result = writable / written[1]
    result.write_text(result.read_text().replace('"seed": 0', '"seed": 1'))
    with pytest.raises(ChecksumError, match=written[1].rsplit("/", 1)[1]):
        ZooStore(writable).verify()
    with pytest.raises(ChecksumError):  # nor does a new card vouch for it
        write_card(ZooStore(writable))


def test_a_benchmark_file_the_manifest_lacks_is_reported_unchecked(writable):
    write_card(ZooStore(writable))
    stray = writable / "bench" / "results" / "stray.md"
    stray.parent.mkdir(parents=True)
    stray.write_text("| a |")
    (unchecked,) = ZooStore(writable).verify()
    assert "bench/results/stray.md" in unchecked and "unchecked" in unchecked


HOLDER = """
import sys, pathlib
from zoo_dataset.store.lock import writer_lock
with writer_lock(pathlib.Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_the_record_is_refused_while_another_writer_holds_the_store(writable, random_split, document):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(writable)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match=f"is being written by pid {holder.pid}"):
            record_in_store(writable, random_split, document)
    finally:
        holder.communicate("\n", timeout=60)
    assert not (writable / "bench").exists()


def test_a_split_of_another_store_is_not_recorded(writable, tmp_path, document):
    other = make_split(synthetic_store(tmp_path / "other", n_models=6, populations=("original",)), "random")
    with pytest.raises(ZooSpecError, match="was made for the models"):
        record_in_store(writable, other, document)
    assert not (writable / "bench").exists()


# ---------------------------------------------------------------- the command on a tiny real build

SMOKE = {"model_subset": (0, 1, 2, 3, 4, 8), "epochs": 1, "mp_epochs": 1, "mp_levels": (0.5, 0.9), "vd_epochs": 1}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """digits_seed cut to 6 models (store split: 4 train + val, 2 test), 1 epoch per stage, every stage."""
    from builders.build import build_zoo
    from zoo_dataset.specs import get_spec

    spec = get_spec("digits_seed").with_overrides(**SMOKE)
    splits = model_splits(spec)
    assert [m for m in SMOKE["model_subset"] if splits[m] == "test"] == [1, 8]
    root = tmp_path_factory.mktemp("built")
    build_zoo(spec, root, stages=["original", "mp", "vd"], progress=False)
    return root


@pytest.fixture
def stand_ins(monkeypatch, fake_mask_scores):
    monkeypatch.setattr(bench_cli, "default_predictors",
                        lambda quick, seed, epochs=None: ([MeanStandIn(), LinearStandIn()], [MagnitudeStandIn()], []))


def _rows(path):
    return {(r["task"], r["population"], r["target"], r["predictor"], r["metric"], r["over"], r["sparsity"]):
            r["value"] for r in json.loads(path.read_text())["rows"]}


def test_the_command_runs_every_task_and_records_it(built, tmp_path, stand_ins):
    out = tmp_path / "out"
    args = ["--zoo", "digits_seed", "--root", str(built), "--quick", "--out", str(out)]
    result = CliRunner().invoke(bench_cli.main, args)
    assert result.exit_code == 0, result.output
    assert "#### Task 3: zero-shot masks" in result.output and "| linear |" in result.output
    (results,) = out.glob("bench-*.json")
    doc = json.loads(results.read_text())
    assert {r["task"] for r in doc["rows"]} == {"properties", "twins", "masks"}
    assert [p for p in doc["property_predictors"]] == ["mean", "linear"] and doc["quick"] is True
    split = load_split(out / f"{doc['split']}.json")
    assert split.kind == "store" and split.folds[0].test == (1, 8)
    store = ZooStore(built / "digits_seed")
    assert f"bench/results/{results.name}" in store.manifest.card_files and store.verify() == []
    assert "## Benchmarks" in (built / "digits_seed" / "README.md").read_text()

    # the split file reused with the same seed gives the same numbers; --no-store leaves the store be
    manifest = (built / "digits_seed" / "manifest.json").read_bytes()
    again = tmp_path / "again"
    result = CliRunner().invoke(bench_cli.main, ["--zoo", str(built / "digits_seed"), "--quick", "--out", str(again),
                                                 "--split", str(out / f"{doc['split']}.json"), "--no-store"])
    assert result.exit_code == 0, result.output
    assert _rows(again / results.name) == _rows(results)
    assert (built / "digits_seed" / "manifest.json").read_bytes() == manifest


@pytest.mark.parametrize("args, message", [
    (["--split-kind", "random"], "--split fixes the models"),
    (["--tasks", "properties,speed"], "unknown task(s) speed"),
    (["--predictors", "mean,oracle"], "no predictor is named oracle"),
    (["--epochs", "3-1"], "is not a forward range"),
    (["--levels", "0.7"], "MP level 0.7 is not stored"),
    (["--activation", "relu"], "activation relu is not in this store"),
    (["--quick", "--train-epochs", "3"], "leave out --train-epochs"),
])
def test_the_command_refuses_bad_options_in_one_line(built, tmp_path, stand_ins, args, message):
    split = save_split(make_split(ZooStore(built / "digits_seed"), "random"), tmp_path)
    if args[0] == "--split-kind":
        args = [*args, "--split", str(split)]
    result = CliRunner().invoke(bench_cli.main, ["--zoo", "digits_seed", "--root", str(built), "--no-store",
                                                 "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert message in line


def test_the_command_refuses_a_split_of_another_store(built, store, tmp_path, stand_ins):
    split = save_split(make_split(store, "random"), tmp_path)
    result = CliRunner().invoke(bench_cli.main, ["--zoo", "digits_seed", "--root", str(built), "--split", str(split),
                                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "was made for the models of digits_seed" in result.output


def test_the_command_with_the_default_baselines(built, tmp_path):
    """``zoo-bench --zoo digits_seed --quick`` as CI runs it: every baseline, every task."""
    pytest.importorskip("analysis.bench.property_baselines")
    pytest.importorskip("analysis.bench.mask_baselines")
    pytest.importorskip("analysis.bench.mask_scores")
    out = tmp_path / "out"
    result = CliRunner().invoke(bench_cli.main, ["--zoo", "digits_seed", "--root", str(built), "--quick",
                                                 "--out", str(out), "--no-store"])
    assert result.exit_code == 0, result.output
    (results,) = out.glob("bench-*.json")
    assert {r["task"] for r in json.loads(results.read_text())["rows"]} == {"properties", "twins", "masks"}


# ---------------------------------------------------------------- the worked example of docs/benchmark.md


def test_the_documented_example_runs(tmp_path, monkeypatch, capsys, fake_mask_scores):
    text = (Path(__file__).resolve().parent.parent / "docs" / "benchmark.md").read_text()
    section = text[text.index("## Adding a model"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("\n```\n")]
    synthetic_store(tmp_path / "stores", n_models=8, original_epochs=2, mp_epochs=1, vd_epochs=2)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/benchmark.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "| norm-line | " in printed and "| scaled-magnitude | " in printed
    namespace: dict = {}
    exec(compile(code.split("\nstore = ")[0], "docs/benchmark.md", "exec"), namespace)  # the classes alone
    store = ZooStore(tmp_path / "stores" / "digits_seed")
    originals = np.stack([store.weights("original", m, -1) for m in range(3)])
    is_weight = store.layout.weight_mask()
    for sparsity in (0.5, 0.8, 0.9, 0.95):  # the mask predictor prunes exactly the share asked for
        keep = namespace["ScaledMagnitude"]().keep(originals, store.layout, sparsity)
        assert keep[:, ~is_weight].all()
        assert (~keep).sum(1).tolist() == [prune_count(sparsity, store.layout.num_weights)] * 3


# ---------------------------------------------------------------- the public API


def test_zoo_twins_bench_is_the_benchmark_and_loads_on_use():
    import zoo_twins
    from analysis.bench import tasks

    assert zoo_twins.bench.run_benchmark is tasks.run_benchmark
    scope: dict = {}
    exec("from zoo_twins.bench import *", scope)
    assert set(zoo_twins.bench.__all__) <= set(scope)
    out = subprocess.run([sys.executable, "-c", "import sys, zoo_twins; print('sklearn' in sys.modules)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_zoo_twins_bench_works_beside_a_users_own_analysis_and_loaders(store, tmp_path):
    project = tmp_path / "research"
    for package in ("analysis", "loaders"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text("MINE = True\n")
    code = ("import analysis, loaders\n"
            "from zoo_twins import ZooStore\n"
            "from zoo_twins.bench import make_split\n"
            f"split = make_split(ZooStore({str(store.zoo_dir)!r}), 'kfold', seed=0, k=2)\n"
            "print(analysis.MINE, loaders.MINE, split.id)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", make_split(store, "kfold", seed=0, k=2).id]
