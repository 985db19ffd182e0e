"""The published Model Zoos from a fake Zenodo on 127.0.0.1: download, conversion, and what reads the result."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from _fake_zenodo import VD_EPOCHS, FakeZenodo, ard_log_alpha, original_trials, twin_trials, write_idx
from click.testing import CliRunner

from analysis import cli as report_cli
from analysis.hyperrep import cli as hyperrep_cli
from builders import cli as build_cli
from loaders import ZooTwinDataset, cli
from loaders.download import download_zoo
from releases import zenodo
from releases.modelzoos import published
from zoo_dataset.data import load_dataset
from zoo_dataset.errors import ChecksumError, DataFormatError, StoreError, ZooSpecError
from zoo_dataset.metrics import evaluate
from zoo_dataset.specs import get_spec
from zoo_dataset.store import ZooStore
from zoo_dataset.store.tables import model_splits

DATASET = {"mnist_seed": "mnist", "svhn_seed": "svhn", "fmnist_seed": "fmnist"}


def pick_models(zoo: str) -> list[int]:
    """Two train, one val and one test model: enough for the loaders and the hyper-representation."""
    splits = model_splits(get_spec(zoo))
    by = {s: [m for m, v in sorted(splits.items()) if v == s] for s in ("train", "val", "test")}
    return sorted(by["train"][:2] + by["val"][:1] + by["test"][:1])


def zipped(write) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        write(zf)
    return buffer.getvalue()


def publish(server: FakeZenodo, zoo: str, data=None, orphan: bool = False, drop: bool = False) -> dict:
    """The zoo's records on the fake Zenodo: the original zip (with the record's other zips and a
    pickled .pt beside it) and, for MNIST and SVHN, the twins zip. Returns what was written."""
    spec, entries = get_spec(zoo), published(zoo)
    models = pick_models(zoo)
    written = {}

    def originals(zf):
        written["originals"] = original_trials(zf, f"tune_zoo_{DATASET[zoo]}_uniform", spec, models)

    server.records[entries["original"].record] = {
        f"{DATASET[zoo]}_uniform.zip": zipped(originals),
        f"{DATASET[zoo]}_hyperparameter_10_fixed_seeds.zip": b"not fetched",
        "dataset.pt": b"a pickle that must never be fetched",
    }
    if "vd" in entries:
        labels = {m: name for m, (name, _) in written["originals"].items()}
        twins_of = dict(written["originals"])
        if drop:  # one original without a published twin
            twins_of.pop(models[0])
        if orphan:  # a twin whose original is not in the original zip
            twins_of[999] = ("x", next(iter(written["originals"].values()))[1])
            labels[999] = "NN_tune_trainable_c0371_00999_999_seed=1000_2021-07-01_16-59-53"

        def twins(zf):
            written["twins"] = twin_trials(zf, f"cnn_small_{DATASET[zoo]}_ard", twins_of, labels, data)

        server.records[entries["vd"].record] = {f"cnn_small_{DATASET[zoo]}_ard.zip": zipped(twins)}
    written["models"] = models
    return written


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_TWINS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ZOO_TWINS_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(zenodo, "BACKOFF_S", 0.0)
    with FakeZenodo() as server:
        monkeypatch.setenv("ZOO_TWINS_ZENODO_URL", server.url)
        yield server, tmp_path


@pytest.fixture
def mnist_data(env):
    _, tmp_path = env
    write_idx(tmp_path / "data" / "mnist")
    return load_dataset("mnist", 28)


@pytest.mark.parametrize("zoo", ["mnist_seed", "svhn_seed"])
def test_download_yields_original_and_vd_that_every_reader_opens(env, zoo, tmp_path):
    server, _ = env
    written = publish(server, zoo)
    zip_name = f"{DATASET[zoo]}_uniform.zip"
    size = len(server.records[published(zoo)["original"].record][zip_name])
    server.cut[zip_name] = size // 2
    result = CliRunner().invoke(cli.main, ["--zoo", zoo, "--source", "modelzoos", "--quiet"])
    assert result.exit_code == 0, result.output
    record = published(zoo)["original"].record
    assert (f"/api/records/{record}/files/{zip_name}/content", size // 2) in server.requests  # resumed
    assert not any(".pt" in path or "hyperparameter" in path for path, _ in server.requests)
    store = ZooStore(tmp_path / "cache" / zoo)
    assert set(store.populations) == {"original", "vd"}
    assert store.manifest.model_ids == written["models"]
    store.verify()
    origin = store.manifest.origin
    assert origin["source"] == "modelzoos" and origin["files"]["original"]["file"] == zip_name
    assert origin["files"]["vd"]["md5"] and origin["files"]["original"]["record"] == record
    assert store.manifest.zoo_spec.vd.variant == "cnn_ard"
    # every reader opens it with no further flags
    ds = ZooTwinDataset(zoo, method="vd", split=None)
    assert len(ds) == 4 and ds[0]["twin"].shape == ds[0]["original"].shape
    report = CliRunner().invoke(report_cli.main, ["--zoo", zoo, "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    hyper = CliRunner().invoke(hyperrep_cli.main, ["train", "--zoo", zoo, "--epochs", "1", "--batch-size", "4",
                                                   "--out", str(tmp_path / "ae.pt")])
    assert hyper.exit_code == 0, hyper.output
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_converted_vd_passes_the_checks_of_a_built_one(env, mnist_data, tmp_path):
    server, _ = env
    written = publish(server, "mnist_seed", mnist_data)
    store = ZooStore(download_zoo("mnist_seed", "modelzoos", progress=False))
    layout, states = store.layout, store.states("vd")
    assert store.population("vd").epochs == VD_EPOCHS
    conv = np.zeros(layout.num_params, bool)
    for e in layout.entries:
        conv[e.slice] = len(e.shape) == 4 or (e.kind == "bias" and e.layer.startswith("conv"))
    for model_id, twin in written["twins"].items():
        masks = store.array("masks", "vd", model_id, slice(None))
        log_alpha = store.array("log_alpha", "vd", model_id, slice(None))
        np.testing.assert_array_equal(masks, log_alpha < 3)
        np.testing.assert_array_equal(store.weights("vd", model_id, 0), store.weights("original", model_id))
        for epoch, state in enumerate(twin):
            expected = np.concatenate([
                (ard_log_alpha(state[f"module_list.{i}.log_sigma2{suffix}"], state[f"module_list.{i}.{kind}"],
                               i in (0, 3, 6)).reshape(-1).numpy() if i in (0, 3, 6) or kind == "weight"
                 else np.full(state[f"module_list.{i}.bias"].numel(), -10.0))
                for i in (0, 3, 6, 9, 11) for kind, suffix in (("weight", ""), ("bias", "_bias"))])
            np.testing.assert_allclose(log_alpha[epoch], expected, atol=1e-5)
            recorded = states[(states.model_id == model_id) & (states.epoch == epoch)].iloc[0]
            _, acc, _ = evaluate(store.model("vd", model_id, epoch), mnist_data.test_x, mnist_data.test_y)
            assert acc == pytest.approx(recorded.test_acc, abs=1e-6)
        late = log_alpha[1:]
        assert late[:, conv].max() == 8.0 and late[:, conv].min() == -8.0  # Conv2dARD's clamp
        assert late[:, ~conv].max() > 9.0 and late[:, ~conv].min() < -9.0  # LinearARD's wider one
        assert 0.1 < (~masks[1:]).mean() < 0.9  # some weights pruned, some kept
        assert not masks[1:, conv & ~layout.weight_mask()].all()  # conv biases are pruned too


def test_missing_population_of_a_cached_zoo_is_fetched(env, tmp_path, monkeypatch):
    server, _ = env
    publish(server, "mnist_seed")
    monkeypatch.setenv("ZOO_TWINS_SOURCE", "modelzoos")  # the one default of zoo-download and download=True
    download_zoo("mnist_seed", populations=["original"], progress=False)
    assert ZooStore(tmp_path / "cache" / "mnist_seed").populations == ["original"]
    server.requests.clear()
    ds = ZooTwinDataset("mnist_seed", method="vd", split=None, download=True, source="modelzoos")
    assert set(ds.store.populations) == {"original", "vd"}
    vd_record, original_record = published("mnist_seed")["vd"].record, published("mnist_seed")["original"].record
    assert any(str(vd_record) in p for p, _ in server.requests)
    assert not any(str(original_record) in p for p, _ in server.requests)
    with pytest.raises(StoreError, match="not mixed with hub"):  # two sources of one zoo never mix
        download_zoo("mnist_seed", "hub", populations=["mp"], progress=False)
    with pytest.raises(ZooSpecError, match="--revision applies to the Hub only"):
        ZooTwinDataset("mnist_seed", method="mp", download=True, revision="v2")


def test_md5_mismatch_is_refused_and_nothing_is_kept(env, tmp_path):
    server, _ = env
    publish(server, "mnist_seed")
    server.wrong_md5.add("mnist_uniform.zip")
    with pytest.raises(ChecksumError, match="mnist_uniform.zip from Zenodo record 6632086 is corrupt"):
        download_zoo("mnist_seed", "modelzoos", progress=False)
    assert not (tmp_path / "cache" / "mnist_seed").exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_record_without_the_expected_zip_is_one_line_naming_its_files(env):
    server, _ = env
    publish(server, "mnist_seed")
    record = published("mnist_seed")["original"].record
    server.records[record] = {"mnist_other.zip": b"x", "mnist_more.zip": b"y", "index_dict.json": b"{}"}
    result = CliRunner().invoke(cli.main, ["--zoo", "mnist_seed", "--source", "modelzoos", "--quiet"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "mnist_other.zip, mnist_more.zip, index_dict.json" in result.output and "--file original=" in result.output
    chosen = CliRunner().invoke(cli.main, ["--zoo", "mnist_seed", "--source", "modelzoos", "--quiet",
                                           "--file", "original=mnist_other.zip"])
    assert chosen.exit_code == 1 and "not a readable zip" in chosen.output


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 3], "holds no VD twin trial folders"),  # cut: an inner torch zip remains
    (lambda data: data[:2000] + bytes(b ^ 0xFF for b in data[2000:2100]) + data[2100:], "not a readable zip"),
])
def test_corrupt_zip_leaves_no_store(env, tmp_path, damage, message):
    server, _ = env
    publish(server, "mnist_seed")
    record = published("mnist_seed")["vd"].record
    server.records[record]["cnn_small_mnist_ard.zip"] = damage(server.records[record]["cnn_small_mnist_ard.zip"])
    with pytest.raises(DataFormatError, match=message):  # the listing's md5 is that of the damaged bytes
        download_zoo("mnist_seed", "modelzoos", progress=False)
    assert not (tmp_path / "cache" / "mnist_seed").exists()


def test_twin_whose_original_is_missing_is_reported_and_left_out(env, tmp_path, capsys):
    server, _ = env
    written = publish(server, "mnist_seed", orphan=True)
    store = ZooStore(download_zoo("mnist_seed", "modelzoos", progress=False))
    err = capsys.readouterr().err
    assert "seed=1000_2021-07-01_16-59-53 is not in the original population" in err
    assert "converted 4 VD twins" in err and "skipped 1" in err
    assert sorted(store.states("vd").model_id.unique()) == written["models"]
    provenance = json.loads((store.zoo_dir / "ingest-vd.json").read_text())
    assert len(provenance["skipped"]) == 1


def test_models_without_a_published_twin_stay_partial_until_the_vd_stage_trains_them(env, tmp_path, capsys):
    server, _ = env
    write_idx(tmp_path / "data" / "mnist")
    written = publish(server, "mnist_seed", drop=True)
    store = ZooStore(download_zoo("mnist_seed", "modelzoos", progress=False))
    err = capsys.readouterr().err
    assert f"1 models have no published twin (ids [{written['models'][0]}])" in err
    assert store.manifest.populations["vd"].status == "partial" and "--stages vd --resume" in err
    build = CliRunner().invoke(build_cli.main, ["--zoo", "mnist_seed", "--stages", "vd", "--resume", "--quiet"])
    assert build.exit_code == 0, build.output
    store = ZooStore(tmp_path / "cache" / "mnist_seed")
    assert store.population("vd").status == "complete"
    assert sorted(store.states("vd").model_id.unique()) == written["models"]


def test_other_zoos_originals_convert_and_twins_build_on_top(env, tmp_path):
    server, _ = env
    write_idx(tmp_path / "data" / "fmnist")
    written = publish(server, "fmnist_seed")
    download = CliRunner().invoke(cli.main, ["--zoo", "fmnist_seed", "--source", "modelzoos", "--quiet"])
    assert download.exit_code == 0, download.output
    with pytest.raises(StoreError, match="publishes the original population"):
        download_zoo("fmnist_seed", "modelzoos", populations=["vd"], progress=False)
    build = CliRunner().invoke(build_cli.main, ["--zoo", "fmnist_seed", "--stages", "mp,vd", "--quiet"])
    assert build.exit_code == 0, build.output
    store = ZooStore(tmp_path / "cache" / "fmnist_seed")
    assert {p: store.population(p).status for p in store.populations} == dict.fromkeys(("original", "mp", "vd"),
                                                                                        "complete")
    assert sorted(store.states("mp").model_id.unique()) == written["models"]


def test_zenodo_listing_in_the_legacy_shape_is_read():
    entry = {"filename": "a.zip", "filesize": 3, "checksum": "0" * 32,
             "links": {"download": "https://zenodo.org/record/1/files/a.zip"}}
    parsed = zenodo._parse_file(1, entry, "https://zenodo.org")
    assert (parsed.key, parsed.size, parsed.md5, parsed.url) == ("a.zip", 3, "0" * 32, entry["links"]["download"])
    with pytest.raises(ValueError, match="not a plain file name"):
        zenodo._parse_file(1, {**entry, "filename": "../a.zip"}, "https://zenodo.org")
