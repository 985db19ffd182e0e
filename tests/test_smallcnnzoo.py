"""The Small CNN Zoo's format, in and out: a synthetic zoo written from the public facts
(tests/_small_cnn_zoo.py) ingests, evaluates to its published accuracies on the same data, and gets
MP and VD twins; exports of our stores read back exactly with NFN's reading; export -> import is exact."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import scipy.io
import torch
from _fixtures_loader import shared_loader_store
from _small_cnn_zoo import STEPS, nfn_split, read_like_nfn, teacher_labels, write_zoo
from click.testing import CliRunner
from test_data_formats import make_cifar, make_idx, make_svhn, write_idx

from analysis.cli import main as zoo_report
from builders.cli import main as zoo_build
from builders.export import main as zoo_export
from releases import smallcnnzoo
from releases.smallcnn_export import Selection, export_smallcnnzoo
from releases.smallcnn_format import layout_frame, read_layout, tf_permutation, tf_variables
from releases.smallcnnzoo import ingest_smallcnnzoo
from zoo_dataset.architectures import REGISTRY, build_model
from zoo_dataset.data import load_dataset
from zoo_dataset.errors import DataFormatError, ZooSpecError
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.metrics import evaluate
from zoo_dataset.model_layout import input_size
from zoo_dataset.specs import get_spec
from zoo_dataset.store import ZooStore
from zoo_twins import ZooTwinDataset

N_MODELS = 6
# the zoo's config.dataset: the TFDS names train_network.py loaded (the colab's keys)
TFDS = {"mnist_tf": "mnist", "fmnist_tf": "fashion_mnist", "cifar10gs": "cifar10", "svhngs": "svhn_cropped"}
CRASHED, DIVERGED = 4, 5


@pytest.fixture(autouse=True)
def files_only(monkeypatch):
    monkeypatch.setenv("ZOO_TWINS_DATA_SOURCE", "files")


def teach(dataset: str, data_dir) -> None:
    """Tiny files of ``dataset`` in their real format whose labels are the teacher's predictions."""
    if dataset == "cifar10gs":
        batches = make_cifar(data_dir / "cifar10" / "cifar-10-batches-py", per_batch=8)
    elif dataset == "svhngs":
        raw = make_svhn(data_dir / "svhn")
    else:
        make_idx(data_dir / {"mnist_tf": "mnist", "fmnist_tf": "fmnist"}[dataset])
    size = input_size(get_spec(f"smallcnn_{dataset.removesuffix('_tf')}"))
    data = load_dataset(dataset, size, data_dir)  # the inputs, in file order (the whole train split)
    train, test = teacher_labels(data.train_x.numpy(), data.test_x.numpy())
    assert len(set(test.tolist())) >= 3  # a teacher that always said one class would check nothing
    if dataset == "cifar10gs":
        folder, per = data_dir / "cifar10" / "cifar-10-batches-py", 8
        for i, name in enumerate(f"data_batch_{b}" for b in range(1, 6)):
            batches[name][b"labels"] = [int(v) for v in train[i * per : (i + 1) * per]]
        batches["test_batch"][b"labels"] = [int(v) for v in test]
        for name, batch in batches.items():
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    elif dataset == "svhngs":
        for split, labels in (("train", train), ("test", test)):
            y = np.where(labels == 0, 10, labels).reshape(-1, 1).astype(np.uint8)  # the .mat files' label 10 is 0
            scipy.io.savemat(data_dir / "svhn" / f"{split}_32x32.mat", {"X": raw[split][0], "y": y})
    else:
        folder = data_dir / {"mnist_tf": "mnist", "fmnist_tf": "fmnist"}[dataset]
        write_idx(folder / "train-labels-idx1-ubyte", train)
        write_idx(folder / "t10k-labels-idx1-ubyte", test)


def synthetic(tmp_path, dataset: str = "cifar10gs"):
    data_dir, zoo = tmp_path / "data", tmp_path / "published"
    teach(dataset, data_dir)
    data = load_dataset(dataset, input_size(get_spec(zoo_name(dataset))), data_dir)
    table = write_zoo(zoo, data, N_MODELS, dataset=TFDS[dataset], crashed=CRASHED, diverged=DIVERGED)
    return data_dir, zoo, data, table


def zoo_name(dataset: str) -> str:
    return f"smallcnn_{dataset.removesuffix('_tf')}"


def published_rows(table: pd.DataFrame, model: int) -> pd.DataFrame:
    modeldir = sorted(table.modeldir.unique())[model]  # write_zoo's model m has the m-th folder name
    return table[table.modeldir == modeldir].sort_values("step")


def correct(model, data) -> int:
    """Test images the model classifies right: a count, compared exactly with the published accuracy's."""
    return round(float(evaluate(model, data.test_x, data.test_y)[1]) * len(data.test_y))


def counts(accuracies, data) -> list[int]:
    return [round(float(a) * len(data.test_y)) for a in accuracies]


def run(command, *args):
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_a_synthetic_zoo_ingests_evaluates_to_its_accuracies_and_gets_twins(tmp_path, one_thread):
    data_dir, zoo, data, table = synthetic(tmp_path)
    run(zoo_build, "--zoo", "smallcnn_cifar10gs", "--from-original", zoo, "--models", f"0-{N_MODELS - 1}",
        "--root", tmp_path / "stores", "--data-dir", data_dir, "--stages", "mp,vd,card", "--mp-levels", "0.5",
        "--mp-epochs", "1", "--vd-epochs", "1", "--quiet")
    store = ZooStore(tmp_path / "stores" / "smallcnn_cifar10gs")
    kept = [m for m in range(N_MODELS) if m not in (CRASHED, DIVERGED)]
    assert store.manifest.model_ids == kept and store.spec.epochs == len(STEPS) - 1
    states = store.states("original")
    for m in kept:
        published, ours = published_rows(table, m), states[states.model_id == m].sort_values("epoch")
        assert ours.step.tolist() == list(STEPS)  # the real steps; store epochs 0..8
        np.testing.assert_array_equal(ours.test_acc, published.test_accuracy)
        np.testing.assert_array_equal(ours.train_loss, published.train_loss)
        for epoch in range(len(STEPS)):
            # a wrong kernel order would compute other predictions than the Keras forward pass that wrote them
            assert correct(store.model("original", m, epoch), data) == counts(published.test_accuracy, data)[epoch]
    models = store.models().set_index("model_id")
    last = states[states.epoch == len(STEPS) - 1].set_index("model_id").test_acc
    assert (last[models.activation == "relu"] == 1.0).all()  # the relu models end as the (relu) teacher
    assert models.loc[1, "config.w_init"] == "glorot_uniform" and models.loc[1, "init"] == "glorot_uniform"
    np.testing.assert_array_equal(models.weight_decay, 2 * models["config.l2reg"])  # Keras' l2 is half our decay
    assert models.optimizer.to_list() == ["adam", "sgd", "adam", "sgd"]
    assert models.lr.to_list() == [1e-3, 2e-3, 3e-3, 4e-3]
    split_rows = nfn_split(zoo, "cifar10_split.csv")  # NFN's split of the published files
    by_modeldir = {table.modeldir[r]: s for s, rows in split_rows.items() for r in rows}
    assert {m: models.split[m] for m in kept} == {m: by_modeldir[models.modeldir[m]] for m in kept}
    for population in ("mp", "vd"):
        assert store.manifest.populations[population].status == "complete"
        assert set(store.states(population).model_id) == set(kept)
    assert (store.zoo_dir / "README.md").exists()
    report = tmp_path / "report"
    run(zoo_report, "--zoo", "smallcnn_cifar10gs", "--root", tmp_path / "stores", "--out", report)
    text = (report / "report.md").read_text()
    assert "- mp: 4 models" in text and "- vd: 4 models" in text and list(report.glob("*.png"))
    dataset = ZooTwinDataset("smallcnn_cifar10gs", method="vd", root=tmp_path / "stores")
    item = dataset[0]
    assert item["original"].shape == item["twin"].shape == (4970,)


def transposed_kernels(store: ZooStore, model: int, epoch: int):
    """The classic mistake: HWIO kernels reshaped to PyTorch's shape without transposing (h and w swapped)."""
    net = store.model("original", model, epoch)
    with torch.no_grad():
        for name in ("conv1", "conv2", "conv3"):
            conv = net.get_submodule(name)
            conv.weight.copy_(conv.weight.transpose(2, 3).clone())
    return net


def test_a_wrong_kernel_order_changes_the_accuracy_the_ingest_test_compares(tmp_path):
    """The check above can fail: a model whose kernels are read in the wrong order misses its accuracies."""
    data_dir, zoo, data, table = synthetic(tmp_path)
    ingest_smallcnnzoo(get_spec("smallcnn_cifar10gs").with_overrides(model_subset=(0, 1)), zoo, tmp_path / "s",
                       echo=lambda line: None, progress=False)
    store = ZooStore(tmp_path / "s" / "smallcnn_cifar10gs")
    wrong = [correct(transposed_kernels(store, m, e), data) for m in (0, 1) for e in range(len(STEPS))]
    right = [n for m in (0, 1) for n in counts(published_rows(table, m).test_accuracy, data)]
    assert [correct(store.model("original", m, e), data) for m in (0, 1) for e in range(len(STEPS))] == right
    assert wrong != right


@pytest.mark.parametrize("dataset", ["mnist_tf", "fmnist_tf", "svhngs"])
def test_every_small_cnn_zoo_dataset_ingests_to_its_accuracies(tmp_path, dataset):
    data_dir, zoo, data, table = synthetic(tmp_path, dataset)
    spec = get_spec(zoo_name(dataset)).with_overrides(model_subset=(0, 1, CRASHED))
    report = ingest_smallcnnzoo(spec, zoo, tmp_path / "s", echo=lambda line: None, progress=False)
    assert sorted(report.trials) == [0, 1] and report.skipped == [f"model {CRASHED}: lacks steps [86]"]
    store = ZooStore(tmp_path / "s" / zoo_name(dataset))
    for m in (0, 1):
        expected = counts(published_rows(table, m).test_accuracy, data)
        assert [correct(store.model("original", m, e), data) for e in range(len(STEPS))] == expected


def test_a_killed_ingest_continues_where_it_stopped(tmp_path, monkeypatch):
    _, zoo, _, _ = synthetic(tmp_path)
    spec = get_spec("smallcnn_cifar10gs").with_overrides(model_subset=tuple(range(4)))
    monkeypatch.setattr(smallcnnzoo, "MODEL_BLOCK", 1)
    real, read = smallcnnzoo.read_models, []

    def dying(weights, perm, values, models, block, layout):
        if len(read) == 2:
            raise KeyboardInterrupt
        read.extend(block)
        return real(weights, perm, values, models, block, layout)

    monkeypatch.setattr(smallcnnzoo, "read_models", dying)
    with pytest.raises(KeyboardInterrupt):
        ingest_smallcnnzoo(spec, zoo, tmp_path / "s", echo=lambda line: None, progress=False)
    monkeypatch.setattr(smallcnnzoo, "read_models", lambda *args: read.extend(args[4]) or real(*args))
    ingest_smallcnnzoo(spec, zoo, tmp_path / "s", echo=lambda line: None, progress=False)
    assert read == [0, 1, 2, 3]  # models 0 and 1 were not read again
    store = ZooStore(tmp_path / "s" / "smallcnn_cifar10gs")
    store.verify()
    assert store.manifest.populations["original"].status == "complete"


def test_a_published_zoo_is_never_trained_and_a_mismatched_layout_is_refused(tmp_path):
    with pytest.raises(ZooSpecError, match="ingest them with"):
        from builders.build import build_zoo

        build_zoo(get_spec("smallcnn_mnist"), tmp_path / "s", stages=["original"], progress=False)
    assert not (tmp_path / "s" / "smallcnn_mnist").exists()
    _, zoo, _, _ = synthetic(tmp_path)
    layout = pd.read_csv(zoo / "layout.csv")
    layout.loc[1, "shape"] = "(3, 3, 16, 1)"  # conv2d's kernel given PyTorch's in/out order
    layout.to_csv(zoo / "layout.csv", index=False)
    with pytest.raises(DataFormatError, match="TensorFlow order"):
        ingest_smallcnnzoo(get_spec("smallcnn_cifar10gs"), zoo, tmp_path / "s", progress=False)


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((2, 4970)), "float64"), (np.asfortranarray(np.zeros((2, 4970), np.float32)), "Fortran"),
    (np.zeros((2, 4971), np.float32), "rows of 4971"),
])
def test_weights_that_are_not_float32_rows_of_the_layout_are_refused(tmp_path, array, message):
    _, zoo, _, _ = synthetic(tmp_path)
    np.save(zoo / "weights.npy", array)
    with pytest.raises(DataFormatError, match=message):
        ingest_smallcnnzoo(get_spec("smallcnn_cifar10gs"), zoo, tmp_path / "s", progress=False)
    assert not (tmp_path / "s" / "smallcnn_cifar10gs").exists()


def _damage_metrics(zoo, change):
    change(pd.read_csv(zoo / "metrics.csv.gz")).to_csv(zoo / "metrics.csv.gz", index=False)


DAMAGE = {
    "step is text": (lambda zoo: _damage_metrics(zoo, lambda t: t.assign(step="last")), "not whole numbers"),
    "a row lost": (lambda zoo: _damage_metrics(zoo, lambda t: t.drop(index=3)), "rows, weights.npy"),
    "truncated gzip": (lambda zoo: (zoo / "metrics.csv.gz").write_bytes((zoo / "metrics.csv.gz").read_bytes()[:200]),
                       "not a CSV table"),
    "split file of other rows": (lambda zoo: (zoo / "cifar10_split.csv").write_text("0\n1\n"), "not a permutation"),
    "layout not CSV": (lambda zoo: (zoo / "layout.csv").write_bytes(b"\x00\x01\"\n\"\"\"x"), "layout.csv"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_files_are_refused_in_one_line_before_a_store_is_made(tmp_path, case):
    _, zoo, _, _ = synthetic(tmp_path)
    damage, message = DAMAGE[case]
    damage(zoo)
    with pytest.raises(DataFormatError, match=message) as info:
        ingest_smallcnnzoo(get_spec("smallcnn_cifar10gs"), zoo, tmp_path / "s", progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "s" / "smallcnn_cifar10gs").exists()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return ZooStore(shared_loader_store(tmp_path_factory))


@pytest.mark.parametrize("population", ["original", "mp@0.5", "vd"])
def test_the_export_of_the_demo_zoo_reads_back_exactly_with_nfns_reading(demo, tmp_path, population):
    selection = Selection.parse(population)
    run(zoo_export, "--zoo", demo.zoo_dir, "--population", population, "--out", tmp_path / "out", "--quiet")
    weights, biases, metrics = read_like_nfn(tmp_path / "out")
    level = 0.5 if selection.level else 0.0
    states = demo.states(selection.population)
    states = states[states.level == level].sort_values(["model_id", "epoch"]).reset_index(drop=True)
    assert metrics.model_id.tolist() == states.model_id.tolist() and metrics.step.tolist() == states.epoch.tolist()
    np.testing.assert_array_equal(metrics.test_accuracy, states.test_acc)
    np.testing.assert_array_equal(metrics.train_accuracy, states.train_acc)
    np.testing.assert_array_equal(metrics.sparsity, states.sparsity)
    for i, (m, epoch) in enumerate(zip(metrics.model_id, metrics.epoch, strict=True)):
        flat = demo.weights(selection.population, m, epoch, selection.level)
        if "masks" in demo.population(selection.population).arrays:  # twins as evaluated
            flat = np.where(demo.array("masks", selection.population, m, epoch, selection.level), flat, 0)
        named = demo.layout.unflatten(flat)
        for layer, w, b in zip(demo.layout.layers, weights, biases, strict=True):
            np.testing.assert_array_equal(w[i], named[f"{layer}.weight"].numpy())
            np.testing.assert_array_equal(b[i], named[f"{layer}.bias"].numpy())
    models = demo.models().set_index("model_id")
    assert (metrics["config.learning_rate"] == models.lr[metrics.model_id].to_numpy()).all()
    split_file = pd.read_csv(tmp_path / "out" / "digits_split.csv", header=None).values.flatten()
    assert sorted(split_file) == list(range(len(metrics)))
    assert metrics.split.iloc[split_file].tolist() == sorted(metrics.split, key=["train", "val", "test"].index)
    assert (metrics.split == models.split[metrics.model_id].to_numpy()).all()


def test_export_then_import_is_exact(demo, tmp_path):
    export_smallcnnzoo(demo, Selection("original", None), tmp_path / "out", progress=False)
    spec = get_spec("digits_seed").with_overrides(model_subset=demo.manifest.model_ids)
    ingest_smallcnnzoo(spec, tmp_path / "out", tmp_path / "again", echo=lambda line: None, progress=False)
    again = ZooStore(tmp_path / "again" / "digits_seed")
    assert again.manifest.model_ids == demo.manifest.model_ids
    for m in demo.manifest.model_ids:
        np.testing.assert_array_equal(again.weights("original", m, slice(None)),
                                      demo.weights("original", m, slice(None)))
        assert again.model_config(m) == demo.model_config(m)
    columns = ["model_id", "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "ggap", "sparsity"]
    ours, theirs = (s.states("original")[columns].sort_values(["model_id", "epoch"]).reset_index(drop=True)
                    for s in (again, demo))
    pd.testing.assert_frame_equal(ours, theirs)
    assert again.models().set_index("model_id").split.to_dict() == demo.models().set_index("model_id").split.to_dict()


def test_a_selection_the_store_lacks_is_one_line(demo, tmp_path):
    result = CliRunner().invoke(zoo_export, ["--zoo", str(demo.zoo_dir), "--population", "mp@0.3", "--out",
                                             str(tmp_path / "out")])
    assert result.exit_code == 2 and "no level 0.3" in result.output and "\n" not in result.output.strip()
    result = CliRunner().invoke(zoo_export, ["--zoo", str(demo.zoo_dir), "--population", "mp", "--out",
                                             str(tmp_path / "out")])
    assert result.exit_code == 2 and "name one" in result.output


@pytest.mark.parametrize("architecture", sorted(REGISTRY))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_architecture_reads_back_with_nfns_reading_and_ingests_to_itself(tmp_path, architecture, channels):
    """The export's layout for CNN-s, CNN-l and smallcnn: NFN's reading gives our tensors, and the
    ingest's reading of layout.csv inverts the export's permutation exactly."""
    layout = ParameterLayout.from_module(build_model(architecture, channels, "relu"))
    ours = np.random.default_rng(0).standard_normal((3, layout.num_params)).astype(np.float32)
    variables = tf_variables(layout)
    perm = tf_permutation(variables, layout.num_params)
    rows = np.empty_like(ours)
    rows[:, perm] = ours
    tmp_path.mkdir(exist_ok=True)
    np.save(tmp_path / "weights.npy", rows)
    layout_frame(variables).to_csv(tmp_path / "layout.csv", index=False)
    pd.DataFrame({"step": [0, 1, 2]}).to_csv(tmp_path / "metrics.csv.gz", index=False)
    weights, biases, _ = read_like_nfn(tmp_path)
    named = layout.unflatten(ours)
    for layer, w, b in zip(layout.layers, weights, biases, strict=True):
        np.testing.assert_array_equal(w, named[f"{layer}.weight"].numpy())
        np.testing.assert_array_equal(b, named[f"{layer}.bias"].numpy())
    read = read_layout(pd.read_csv(tmp_path / "layout.csv"), layout, "test")
    np.testing.assert_array_equal(rows[:, tf_permutation(read, layout.num_params)], ours)
