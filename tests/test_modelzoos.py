"""The published Model Zoos from a fake Zenodo on 127.0.0.1 that answers as zenodo.org does today
(tests/_fake_zenodo.py): download, conversion, and what reads the result."""

from __future__ import annotations

import io
import json
import re
import socket
import zipfile
from email.message import Message
from urllib.error import HTTPError

import numpy as np
import pytest
from _fake_zenodo import VD_EPOCHS, FakeZenodo, ard_log_alpha, original_zip, twin_zip, write_idx
from click.testing import CliRunner

from analysis import cli as report_cli
from analysis.hyperrep import cli as hyperrep_cli
from builders import cli as build_cli
from builders.stages.card import write_card
from loaders import ZooTwinDataset, cli
from loaders.download import download_zoo
from releases import network, zenodo
from releases.ingest import initial_state
from releases.modelzoos import published, table
from zoo_dataset.data import load_dataset
from zoo_dataset.errors import ChecksumError, DataFormatError, StoreError, ZooSpecError
from zoo_dataset.metrics import evaluate
from zoo_dataset.specs import get_spec
from zoo_dataset.store import ZooStore
from zoo_dataset.store.tables import model_splits

ZOOS = list(table()["zoo"])
DATASET_DIR = {"mnist_seed": "MNIST", "svhn_seed": "SVHN"}  # zoos/<DIR>/ in the VD scripts


def pick_models(zoo: str) -> list[int]:
    """Two train, one val and one test model: enough for the loaders and the hyper-representation."""
    splits = model_splits(get_spec(zoo))
    by = {s: [m for m, v in sorted(splits.items()) if v == s] for s in ("train", "val", "test")}
    return sorted(by["train"][:2] + by["val"][:1] + by["test"][:1])


def zip_name(zoo: str, population: str = "original") -> str:
    """The record's file for this population: the known name, else the first inferred fragment + .zip."""
    entry = published(zoo)[population]
    return entry.file or f"{entry.match[0]}.zip"


def version_of(zoo: str, population: str = "original") -> int:
    """The version the fake serves: the known one, else concept + 1 (as the public records appear)."""
    entry = published(zoo)[population]
    return entry.versions[0] if entry.versions else entry.record + 1


def publish(server: FakeZenodo, zoo: str, data=None, orphan: bool = False, drop: bool = False,
            models: list[int] | None = None, version: int | None = None, init_replayable: bool = True) -> dict:
    """The zoo's records on the fake Zenodo: the original zip beside the record's other zips (the
    other zoos of the same record), the preprocessed dataset_*.pt pickles and index_dict*.json, and,
    for MNIST and SVHN, the twins zip. Returns what was written."""
    spec, entries = get_spec(zoo), published(zoo)
    models = models or pick_models(zoo)
    written: dict = {"models": models}
    original = entries["original"]
    blob, written["originals"] = original_zip(spec, models, original.folder, init_replayable=init_replayable)
    files = {}
    for other in ZOOS:  # the record's other zips and its preprocessed files are never fetched
        if published(other)["original"].record == original.record and other != zoo:
            files[zip_name(other)] = b"another zoo: never fetched"
    stem = zip_name(zoo)[:-4]
    files.update({zip_name(zoo): blob, f"dataset_{stem}.pt": b"a pickle that must never be fetched",
                  f"index_dict_{stem}.json": b"{}"})
    server.publish(original.record, version or version_of(zoo), files)
    if "vd" in entries:
        labels = {m: name for m, (name, _) in written["originals"].items()}
        twins_of = dict(written["originals"])
        if drop:  # one original without a published twin
            twins_of.pop(models[0])
        if orphan:  # a twin whose original is not in the original zip
            twins_of[999] = ("x", next(iter(written["originals"].values()))[1])
            labels[999] = "NN_tune_trainable_c0371_00999_999_seed=1000_2021-07-01_16-59-53"
        blob, written["twins"] = twin_zip(twins_of, labels, entries["vd"].folder,
                                          f"zoos/{DATASET_DIR[zoo]}/{original.folder}", data)
        server.publish(entries["vd"].record, version_of(zoo, "vd"), {zip_name(zoo, "vd"): blob})
    return written


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_TWINS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ZOO_TWINS_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(network, "BACKOFF_S", 0.0)
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
    name, version, concept = zip_name(zoo), version_of(zoo), published(zoo)["original"].record
    size = len(server.records[version][name])
    server.cut[name] = size // 2
    result = CliRunner().invoke(cli.main, ["--zoo", zoo, "--source", "modelzoos", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (f"/api/records/{version}/files/{name}/content", size // 2) in server.requests  # resumed
    fetched = [path for path, _ in server.requests if "/files/" in path]
    assert not any(path.endswith((".pt/content", ".json/content")) for path in fetched)
    assert len(fetched) == 3  # the original zip (cut once, then resumed) and the twins zip, nothing else
    store = ZooStore(tmp_path / "cache" / zoo)
    assert set(store.populations) == {"original", "vd"}
    assert store.manifest.model_ids == written["models"]
    store.verify()
    origin = store.manifest.origin
    assert origin["source"] == "modelzoos" and origin["files"]["original"]["file"] == name
    assert (origin["files"]["original"]["concept"], origin["files"]["original"]["record"]) == (concept, version)
    assert origin["files"]["vd"]["md5"] and origin["files"]["vd"]["concept"] == published(zoo)["vd"].record
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


@pytest.mark.parametrize("zoo", ZOOS)
def test_every_published_zoo_downloads_from_zenodo_as_it_answers_today(env, zoo, tmp_path):
    """All 14 zoos of modelzoos.toml: concept ids 404 on /api/records/<id>, the latest version comes from
    versions/latest, the real (or inferred) zip names in the published layout ingest without flags."""
    server, _ = env
    spec = get_spec(zoo)
    written = publish(server, zoo, models=pick_models(zoo)[:2])
    result = CliRunner().invoke(cli.main, ["--zoo", zoo, "--source", "modelzoos", "--quiet"])
    assert result.exit_code == 0, result.output
    # every line is one the download prints when all goes well: a 404 (or any error, any skipped
    # trial) would be a line of another form; the paths hold random md5 digits, so no substring test
    forms = [rf"ingested 2 models \(2 epochs\) from \S+/{re.escape(zip_name(zoo))}; skipped 0",
             r"converted 2 VD twins \(25 epochs\); skipped 0" if "vd" in published(zoo) else None,
             rf"{zoo}: \S+/{zoo} \(populations: {', '.join(published(zoo))}\)"]
    lines = result.output.strip().splitlines()
    assert len(lines) == sum(f is not None for f in forms), result.output
    assert all(re.fullmatch(form, line) for form, line in zip([f for f in forms if f], lines, strict=True)), lines
    store = ZooStore(tmp_path / "cache" / zoo)
    assert store.manifest.model_ids == written["models"]
    assert set(store.populations) == set(published(zoo))
    files = store.manifest.origin["files"]["original"]
    assert (files["concept"], files["record"], files["file"]) == (published(zoo)["original"].record,
                                                                  version_of(zoo), zip_name(zoo))
    fetched = {path for path, _ in server.requests if "/files/" in path}
    assert fetched <= {f"/api/records/{version_of(zoo, p)}/files/{zip_name(zoo, p)}/content" for p in published(zoo)}
    labels = json.loads((store.zoo_dir / "ingest.json").read_text())["trials"].values()
    if spec.variant != "seed":  # Ray's tag of a hyperparameter zoo: cut at 130 characters before the date
        assert all("::" in label and len(label) == 130 + len("_2021-07-01_16-59-53") for label in labels)
    if "vd" in published(zoo):
        twins = json.loads((store.zoo_dir / "ingest-vd.json").read_text())["twins"]
        assert len(twins) == 2 and not any(label in twin for twin in twins.values() for label in labels)


def test_a_seed_zoo_whose_epoch0_is_not_our_replay_ingests_every_trial_and_says_so(env, tmp_path):
    """Our replay of a seed's init was never checked against a live archive: where the published
    checkpoint_000000 differs, every trial is still ingested as published, and the models table,
    the download, zoo-report and the card say so."""
    server, _ = env
    written = publish(server, "usps_seed", init_replayable=False)
    result = CliRunner().invoke(cli.main, ["--zoo", "usps_seed", "--source", "modelzoos", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "skipped 0" in result.output
    assert "warning: checkpoint_000000 of 4 of 4 ingested trials is not the init their seed replays" in result.output
    store = ZooStore(tmp_path / "cache" / "usps_seed")
    assert store.manifest.model_ids == written["models"]
    assert store.models().set_index("model_id").init_matches_seed.to_dict() == dict.fromkeys(written["models"], False)
    configs, layout = store.model_configs(), store.layout
    for model_id in written["models"]:  # epoch 0 is the published init, not our replay
        assert not np.allclose(store.weights("original", model_id, 0),
                               initial_state(store.spec, configs[model_id], layout), rtol=1e-5, atol=1e-6)
    line = ("epoch 0: the published checkpoint_000000 of 4 of 4 ingested models is not the init their seed replays "
            "in this toolkit; they are kept as published (init_matches_seed = false in models.parquet)")
    report = CliRunner().invoke(report_cli.main, ["--zoo", "usps_seed", "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert line in report.output and line in (tmp_path / "report" / "report.md").read_text()
    card = write_card(store).read_text()
    assert f"| epoch 0 | {line.removeprefix('epoch 0: ')} |" in card


def test_a_pinned_version_is_fetched_and_recorded(env, tmp_path):
    server, _ = env
    models = pick_models("mnist_fixed")
    old = publish(server, "mnist_fixed", models=models[:2], version=6632087)
    new = publish(server, "mnist_fixed", models=models[1:], version=7000001)  # a later version of the record
    latest = download_zoo("mnist_fixed", "modelzoos", root=tmp_path / "latest", progress=False)
    assert ZooStore(latest).manifest.model_ids == new["models"]
    pinned = CliRunner().invoke(cli.main, ["--zoo", "mnist_fixed", "--source", "modelzoos", "--quiet",
                                           "--revision", "6632087", "--root", str(tmp_path / "pinned")])
    assert pinned.exit_code == 0, pinned.output
    store = ZooStore(tmp_path / "pinned" / "mnist_fixed")
    assert store.manifest.model_ids == old["models"]
    origin = store.manifest.origin
    assert origin["revision"] == "6632087"
    assert (origin["files"]["original"]["concept"], origin["files"]["original"]["record"]) == (6632086, 6632087)
    server.publish(6620868, 6620869, {"cifar_large_seed.zip": b"x"})
    for revision, message in (("6620869", "is a version of record 6620868, not of record 6632086"),
                              ("1234", "has no record version 1234"), ("v2", "Zenodo version id"),
                              ("9" * 5000, "Zenodo version id"),
                              ("\u0666\u0666\u0663\u0662\u0660\u0668\u0667", "Zenodo version id"),  # 6632087
                              ("original=6632087,original=7000001", "pins the original population twice")):
        refused = CliRunner().invoke(cli.main, ["--zoo", "mnist_fixed", "--source", "modelzoos", "--quiet",
                                                "--revision", revision, "--root", str(tmp_path / "refused")])
        assert refused.exit_code in (1, 2) and message in refused.output
        assert len(refused.output.strip().splitlines()) == 1


def test_known_versions_are_tried_when_versions_latest_refuses_the_concept(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_TWINS_CACHE", str(tmp_path / "cache"))
    with FakeZenodo(concept_latest=False) as server:
        monkeypatch.setenv("ZOO_TWINS_ZENODO_URL", server.url)
        publish(server, "mnist_seed", models=pick_models("mnist_seed")[:2])
        publish(server, "usps_seed", models=pick_models("usps_seed")[:2])
        assert ZooStore(download_zoo("mnist_seed", "modelzoos", populations=["original"], progress=False))
        assert ("/api/records/6632087/versions/latest", 0) in server.requests  # after the concept's 404
        usps = CliRunner().invoke(cli.main, ["--zoo", "usps_seed", "--source", "modelzoos", "--quiet"])
    assert usps.exit_code == 1 and len(usps.output.strip().splitlines()) == 1
    assert "has no record 6633626" in usps.output


def test_rate_limits_are_waited_out_with_their_retry_after(env):
    server, _ = env
    publish(server, "usps_seed", models=pick_models("usps_seed")[:2])
    waits: list[float] = []
    server.rate_limited, server.retry_after = 2, "7"
    client = zenodo.ZenodoClient(server.url, progress=False, sleep=waits.append)
    assert client.latest(6633626).version == 6633627
    assert waits == [7.0, 7.0]
    server.rate_limited, server.retry_after = 1, "86400"  # a day: the wait is bounded
    waits.clear()
    client.latest(6633626)
    assert waits == [zenodo_network_cap()]


def zenodo_network_cap() -> float:
    return network.MAX_RETRY_AFTER_S


@pytest.mark.parametrize("source", ["modelzoos", "https://mirror.example.org/zoos"])
def test_no_network_fails_at_once_in_one_line(tmp_path, monkeypatch, source):
    monkeypatch.setenv("ZOO_TWINS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ZOO_TWINS_ZENODO_URL", "https://zenodo.org")
    lookups = []

    def no_dns(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    result = CliRunner().invoke(cli.main, ["--zoo", "mnist_seed", "--source", source, "--quiet"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    host = "zenodo.org" if source == "modelzoos" else "mirror.example.org"
    assert f"cannot reach {host}" in result.output and "no network?" in result.output
    assert len(lookups) == 1  # no five retries of a name lookup


@pytest.mark.parametrize("entry, message", [
    ({"key": "a\x00b.zip"}, "is not a plain file name"),
    ({"key": "\n.zip"}, "is not a plain file name"),
    ({"key": ".zip"}, "is not a plain file name"),
    ({"checksum": "md5:../../../../../../../../tmp/rr"}, "is not an md5"),  # 32 characters, not a digest
    ({"checksum": "md5:/tmp/aaaaaaaaaaaaaaaaaaaaaaaaaa"}, "is not an md5"),
    ({"links": {"self": "file:///etc/hostname"}}, "is not an http(s) URL on"),
    ({"links": {"self": "https://elsewhere.example/api/records/1/files/a.zip/content"}}, "is not an http(s) URL on"),
])
def test_hostile_file_entries_are_refused_before_anything_is_written(env, tmp_path, entry, message):
    server, _ = env
    publish(server, "usps_seed", models=pick_models("usps_seed")[:2])
    listing = server.listing(6633627)
    listing["files"] = [{**f, **entry} for f in listing["files"]]
    server.raw[6633627] = listing
    result = CliRunner().invoke(cli.main, ["--zoo", "usps_seed", "--source", "modelzoos", "--quiet"])
    assert result.exit_code == 1 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert not any("/files/" in path for path, _ in server.requests)
    assert not (tmp_path / "cache" / "downloads").exists()


@pytest.mark.parametrize("body", [{"files": [[1, 2]]}, {"id": 6633627, "files": [[1, 2]]}, [1, 2],
                                  {"id": 6633627, "files": "x"}])
def test_a_malformed_record_listing_is_one_line(env, body):
    server, _ = env
    publish(server, "usps_seed", models=pick_models("usps_seed")[:2])
    server.raw[6633627] = body
    result = CliRunner().invoke(cli.main, ["--zoo", "usps_seed", "--source", "modelzoos", "--quiet"])
    assert result.exit_code == 1 and "is not a Zenodo record listing" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def _with_second_copy(listing: dict) -> dict:
    """The listing with its first file listed again (other bytes, same name)."""
    return {**listing, "files": [*listing["files"], {**listing["files"][0], "checksum": "md5:" + "0" * 32}]}


@pytest.mark.parametrize("change, message", [
    (lambda listing: {**listing, "conceptrecid": "6632086"}, "is a version of record 6632086, not of record 6633626"),
    (lambda listing: {key: v for key, v in listing.items() if key != "conceptrecid"},
     "is a version of no named concept record"),
    (lambda listing: {**listing, "id": "\u0666\u0666\u0663\u0663\u0666\u0662\u0667"}, "is not a Zenodo record id"),
    (lambda listing: {**listing, "id": True}, "is not a Zenodo record id"),
    (_with_second_copy, "is listed twice"),
    (lambda listing: b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (lambda listing: b'{"id": ' + b"7" * 5000 + b', "files": []}', "not JSON text"),
])
def test_a_hostile_record_listing_is_refused_in_one_line(env, tmp_path, change, message):
    """versions/latest may answer a record of another concept, a non-ASCII or boolean id, a file twice,
    or JSON that json cannot parse: each is one line, and nothing is fetched."""
    server, _ = env
    publish(server, "usps_seed", models=pick_models("usps_seed")[:2])
    server.raw[6633627] = change(server.listing(6633627))
    result = CliRunner().invoke(cli.main, ["--zoo", "usps_seed", "--source", "modelzoos", "--quiet"])
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error: ")
    assert not any("/files/" in path for path, _ in server.requests)
    assert not (tmp_path / "cache" / "usps_seed").exists()


@pytest.mark.parametrize("value, wait", [("7", 7.0), ("nan", 0.0), ("inf", 0.0), ("-5", 0.0), ("1e9", 0.0),
                                         ("9" * 40, network.MAX_RETRY_AFTER_S),
                                         ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0), ("Fri, 31 Dec 9999 23:59:59 GMT",
                                                                                  network.MAX_RETRY_AFTER_S)])
def test_retry_after_is_delay_seconds_or_a_date_and_bounded(value, wait):
    """RFC 9110 10.2.3: Retry-After is an HTTP date or delay-seconds (digits); anything else waits the default."""
    answer = HTTPError("https://zenodo.org/x", 429, "Too Many Requests", Message(), None)
    answer.headers["Retry-After"] = value
    assert network.retry_after(answer, 0.0) == wait


def test_a_rate_limit_asking_for_nan_seconds_is_waited_out(env):
    server, tmp_path = env
    publish(server, "usps_seed", models=pick_models("usps_seed")[:2])
    server.rate_limited, server.retry_after = 2, "nan"
    result = CliRunner().invoke(cli.main, ["--zoo", "usps_seed", "--source", "modelzoos", "--quiet"])
    assert result.exit_code == 0, result.output
    assert ZooStore(tmp_path / "cache" / "usps_seed").manifest.model_ids == pick_models("usps_seed")[:2]


@pytest.mark.parametrize("where, location, followed", [
    ("listing", "{url}/api/records/6633627", True),  # the same host: followed
    ("listing", "{other}/api/records/6633627", False),  # another host name for the same server
    ("file", "{other}/api/records/6633627/files/{name}/content", False),
    ("file", "ftp://127.0.0.1/{name}", False),
    ("file", "{https}/api/records/6633627/files/{name}/content", False),  # another port
])
def test_redirects_are_followed_only_within_the_host(env, tmp_path, where, location, followed):
    server, _ = env
    publish(server, "usps_seed", models=pick_models("usps_seed")[:2])
    name, port = zip_name("usps_seed"), server.url.rpartition(":")[2]
    path = ("/api/records/6633626/versions/latest" if where == "listing"
            else f"/api/records/6633627/files/{name}/content")
    server.redirects[path] = location.format(url=server.url, other=f"http://localhost:{port}", name=name,
                                             https=f"https://127.0.0.1:{int(port) + 1}")
    result = CliRunner().invoke(cli.main, ["--zoo", "usps_seed", "--source", "modelzoos", "--quiet"])
    if followed:
        assert result.exit_code == 0, result.output
        assert ("/api/records/6633627", 0) in server.requests
        return
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"{path} redirects to {server.redirects[path]}; refusing it" in result.output
    assert [p for p, _ in server.requests].count(path) == 1  # refused at once, not retried
    assert not (tmp_path / "cache" / "usps_seed").exists()


def test_converted_vd_passes_the_checks_of_a_built_one(env, mnist_data, tmp_path):
    server, _ = env
    written = publish(server, "mnist_seed", mnist_data)
    store = ZooStore(download_zoo("mnist_seed", "modelzoos", progress=False))
    layout, states = store.layout, store.states("vd")
    assert store.population("vd").epochs == VD_EPOCHS == 25  # checkpoint_000000..000025
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
    # the stored VD sparsity is the archive's own sparsity_ratio (dropped weights / weights), epoch by epoch
    archive = zipfile.ZipFile(io.BytesIO(server.records[version_of("mnist_seed", "vd")][zip_name("mnist_seed",
                                                                                                  "vd")]))
    twins = json.loads((store.zoo_dir / "ingest-vd.json").read_text())["twins"]
    twin_of = {label: int(model_id) for model_id, label in twins.items()}
    checked = 0
    for member in archive.namelist():
        if member.endswith("/result.json"):
            model_id = twin_of[member.split("/")[-2]]
            rows = [json.loads(line) for line in archive.read(member).decode().splitlines()]
            stored = states[states.model_id == model_id].sort_values("epoch").sparsity.to_numpy()
            assert len(rows) == len(stored) == 26
            np.testing.assert_allclose(stored, [row["sparsity_ratio"] for row in rows], rtol=0, atol=1e-12)
            checked += 1
    assert checked == len(written["twins"]) == 4


def test_missing_population_of_a_cached_zoo_is_fetched(env, tmp_path, monkeypatch):
    server, _ = env
    publish(server, "mnist_seed")
    monkeypatch.setenv("ZOO_TWINS_SOURCE", "modelzoos")  # the one default of zoo-download and download=True
    download_zoo("mnist_seed", populations=["original"], progress=False)
    assert ZooStore(tmp_path / "cache" / "mnist_seed").populations == ["original"]
    server.requests.clear()
    ds = ZooTwinDataset("mnist_seed", method="vd", split=None, download=True, source="modelzoos")
    assert set(ds.store.populations) == {"original", "vd"}
    vd_record, original_record = version_of("mnist_seed", "vd"), version_of("mnist_seed")
    assert any(str(vd_record) in p for p, _ in server.requests)
    assert not any(str(original_record) in p or "6632086" in p for p, _ in server.requests)
    with pytest.raises(StoreError, match="not mixed with hub"):  # two sources of one zoo never mix
        download_zoo("mnist_seed", "hub", populations=["mp"], progress=False)
    with pytest.raises(ZooSpecError, match="modelzoos takes a Zenodo version id"):
        ZooTwinDataset("mnist_seed", method="mp", download=True, revision="v2")


def test_md5_mismatch_is_refused_and_nothing_is_kept(env, tmp_path):
    server, _ = env
    publish(server, "mnist_seed")
    server.wrong_md5.add("mnist_seed.zip")
    with pytest.raises(ChecksumError, match="mnist_seed.zip from Zenodo record 6632087 is corrupt"):
        download_zoo("mnist_seed", "modelzoos", progress=False)
    assert not (tmp_path / "cache" / "mnist_seed").exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_record_without_the_expected_zip_is_one_line_naming_its_files(env):
    server, _ = env
    publish(server, "mnist_seed")
    server.records[version_of("mnist_seed")] = {"mnist_other.zip": b"x", "mnist_more.zip": b"y",
                                                "index_dict.json": b"{}"}
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
    files, name = server.records[version_of("mnist_seed", "vd")], zip_name("mnist_seed", "vd")
    files[name] = damage(files[name])
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
