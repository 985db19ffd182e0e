"""Downloads from hostile or changing sources: a mirror on 127.0.0.1 that lies about paths and
sizes, a source holding another zoo, an update that fails half way, a partial update."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import h5py
import numpy as np
import pytest
from _fixtures_loader import shared_loader_store
from _http import local_server
from click.testing import CliRunner

import loaders.download as download
from builders.publish import publish_mirror
from loaders import cli
from loaders.download import download_zoo
from zoo_dataset.errors import ChecksumError, StoreError, ZooSpecError
from zoo_dataset.store import ZooStore

ZOO = "digits_seed"
ENDLESS_CAP = 64 << 20  # what the hostile server sends at most for an "endless" body


class HostileHandler(SimpleHTTPRequestHandler):
    """Static files, except paths in ``server.endless``: a body with no length that never ends
    (up to ENDLESS_CAP, so the test is bounded even against a client that never stops)."""

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path in self.server.endless:
            self.send_response(200)
            self.end_headers()
            sent = 0
            try:
                while sent < ENDLESS_CAP:
                    self.wfile.write(bytes(1 << 16))
                    sent += 1 << 16
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.server.sent[self.path] = sent
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ZooStore(shared_loader_store(tmp_path_factory))


@pytest.fixture
def mirror(store, tmp_path):
    directory = tmp_path / "mirror"
    publish_mirror(store, directory)
    with local_server(functools.partial(HostileHandler, directory=str(directory))) as (server, url):
        server.requests, server.endless, server.sent = [], set(), {}
        yield server, directory / ZOO, url


def edit_manifest(zoo_dir: Path, change) -> None:
    path = zoo_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with its sha256 (the exact state of a store)."""
    return {p.relative_to(directory).as_posix(): sha256(p) for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("entry", ["file", "states_file"])
@pytest.mark.parametrize("escape", ["../../../escaped/victim.txt", "ABSOLUTE"])
@pytest.mark.parametrize("source", ["mirror", "local"])
def test_manifest_entries_that_leave_the_store_are_refused_before_writing(mirror, tmp_path, entry, escape, source):
    """A mirror listing ``../../../x`` or an absolute path (with a matching sha256) once had that file
    written outside the cache: now the whole download is refused and nothing is written."""
    server, served, url = mirror
    victim = tmp_path / "escaped" / "victim.txt"
    relative = str(victim) if escape == "ABSOLUTE" else escape
    payload = b"attacker's bytes"
    (served / "payload").write_bytes(payload)

    def poison(manifest):
        shard = manifest["populations"]["original"]["shards"][0]
        shard[entry] = relative
        shard["sha256" if entry == "file" else "states_sha256"] = hashlib.sha256(payload).hexdigest()

    edit_manifest(served, poison)
    root = tmp_path / "cache"
    with pytest.raises(StoreError, match="outside the store"):
        if source == "mirror":
            download_zoo(ZOO, "mirror", url=url, root=root, progress=False)
        else:
            download_zoo(ZOO, str(served), root=root, progress=False)
    assert not victim.exists() and not (root / ZOO).exists()


def test_a_reader_refuses_a_manifest_that_points_outside(store, tmp_path):
    copy = tmp_path / ZOO
    shutil.copytree(store.zoo_dir, copy)
    other = tmp_path / "elsewhere.parquet"
    shutil.copyfile(copy / store.population("vd").shards[0].states_file, other)

    def absolute(manifest):
        shard = manifest["populations"]["vd"]["shards"][0]
        shard["states_file"], shard["states_sha256"] = str(other), sha256(other)

    edit_manifest(copy, absolute)
    with pytest.raises(StoreError, match="points outside the store"):
        ZooStore(copy)


@pytest.mark.parametrize("name", ["../escaped", "/abs/path", "", "a/b", ".."])
def test_zoo_names_that_are_paths_write_nothing(mirror, tmp_path, monkeypatch, name):
    _, _, url = mirror
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    result = CliRunner().invoke(cli.main, ["--zoo", name, "--source", "mirror", "--url", url, "--root", str(root)])
    assert result.exit_code == 2
    assert result.output.startswith("error: zoo name") and result.output.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror"]


def test_an_endless_shard_is_cut_at_its_declared_size(store, mirror, tmp_path):
    server, _, url = mirror
    shard = store.population("mp").shards[0]
    server.endless.add(f"/{ZOO}/{shard.file}")
    with pytest.raises(StoreError, match=f"sends more than the {shard.bytes} bytes its manifest declares"):
        download_zoo(ZOO, "mirror", url=url, root=tmp_path / "cache", progress=False)
    staged = tmp_path / "cache" / f".{ZOO}.download"
    assert not list(staged.rglob("*.part"))  # the cut transfer is not kept
    assert server.requests.count(f"/{ZOO}/{shard.file}") == 1  # no retries of a lying server
    assert not (tmp_path / "cache" / ZOO).exists()


def test_an_endless_manifest_is_cut_at_the_manifest_cap(mirror, tmp_path, monkeypatch):
    server, _, url = mirror
    monkeypatch.setattr(download, "MAX_MANIFEST_BYTES", 1 << 20)
    server.endless.add(f"/{ZOO}/manifest.json")
    with pytest.raises(StoreError, match="sends more than the 1048576 bytes"):
        download_zoo(ZOO, "mirror", url=url, root=tmp_path / "cache", progress=False)
    assert sum(p.stat().st_size for p in (tmp_path / "cache").rglob("*") if p.is_file()) <= 1 << 20


def test_a_source_holding_another_zoo_is_refused(store, tmp_path):
    """zoo-download --zoo mnist_seed from a source that holds digits_seed once exited 0 and the
    loader then served digits as mnist."""
    args = ["--zoo", "mnist_seed", "--source", str(store.zoo_dir), "--root", str(tmp_path / "cache"), "--quiet"]
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 1
    assert result.output == f"error: {store.zoo_dir} holds zoo 'digits_seed', not 'mnist_seed'; refusing it\n"
    assert not (tmp_path / "cache" / "mnist_seed").exists()


def scale_shard(directory: Path, population: str, factor: float) -> None:
    """The source publishes a newer version: one shard of ``population`` scaled, its manifest updated."""
    shard = ZooStore(directory).population(population).shards[0]
    with h5py.File(directory / shard.file, "r+") as f:
        f["weights"][...] = f["weights"][...] * factor

    def update(manifest):
        entry = manifest["populations"][population]["shards"][0]
        entry["sha256"], entry["bytes"] = sha256(directory / shard.file), (directory / shard.file).stat().st_size

    edit_manifest(directory, update)


def test_a_failed_update_leaves_the_old_store_exactly_as_it_was(store, tmp_path):
    """v2 changes two shards and the second fails its checksum: the first must not replace v1's."""
    source, root = tmp_path / "source" / ZOO, tmp_path / "cache"
    shutil.copytree(store.zoo_dir, source)
    download_zoo(ZOO, str(source), root=root, progress=False)
    before = tree(root / ZOO)
    scale_shard(source, "original", 2.0)
    scale_shard(source, "mp", 3.0)
    shard = ZooStore(source).population("mp").shards[0]
    data = bytearray((source / shard.file).read_bytes())
    data[-100] ^= 0xFF  # damaged in transit: the served file no longer matches its manifest
    (source / shard.file).write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=f"{shard.file} from .* is corrupt"):
        download_zoo(ZOO, str(source), root=root, progress=False)
    assert tree(root / ZOO) == before
    got = ZooStore(root / ZOO)
    got.verify()
    np.testing.assert_array_equal(got.weights("original", 0), store.weights("original", 0))


def test_a_partial_update_never_mixes_versions(store, tmp_path):
    """--populations original against a newer source whose mp changed once wrote the new manifest
    over the old mp files; now the local mp is brought to the same version."""
    source, root = tmp_path / "source" / ZOO, tmp_path / "cache"
    shutil.copytree(store.zoo_dir, source)
    download_zoo(ZOO, str(source), root=root, populations=["original", "mp"], progress=False)
    scale_shard(source, "mp", 2.0)
    download_zoo(ZOO, str(source), root=root, populations=["original"], progress=False)
    got = ZooStore(root / ZOO)
    got.verify()
    assert set(got.populations) == {"original", "mp"}
    level = store.population("mp").levels[0]
    model = store.population("mp").shards[0].model_ids[0]
    np.testing.assert_array_equal(got.weights("mp", model, -1, level), 2.0 * store.weights("mp", model, -1, level))
    assert not (root / f".{ZOO}.download").exists() and not (root / f".{ZOO}.replaced").exists()


class RedirectLoop(SimpleHTTPRequestHandler):
    """Every path redirects to itself: urllib gives up with a three-line message."""

    def location(self) -> str:
        return self.path

    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", self.location())
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_redirect_loop_is_one_line(tmp_path):
    with local_server(RedirectLoop) as (_, url):
        result = CliRunner().invoke(cli.main, ["--zoo", ZOO, "--source", url, "--root", str(tmp_path), "--quiet"])
    assert result.exit_code == 1 and "HTTP 302" in result.output and "infinite loop" in result.output
    assert len(result.output.strip().splitlines()) == 1


class OtherHostRedirect(RedirectLoop):
    """Every path redirects to the same path under another host name of this server (localhost)."""

    def location(self) -> str:
        return f"http://localhost:{self.server.server_address[1]}{self.path}"


def test_a_mirror_redirecting_to_another_host_is_refused_in_one_line(tmp_path):
    with local_server(OtherHostRedirect) as (_, url):
        result = CliRunner().invoke(cli.main, ["--zoo", ZOO, "--source", url, "--root", str(tmp_path), "--quiet"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"{url}/{ZOO}/manifest.json redirects to http://localhost:" in result.output
    assert "refusing it" in result.output
    assert not (tmp_path / ZOO).exists()


class BadLengthHandler(SimpleHTTPRequestHandler):
    """Static files whose Content-Length is not a length ("123abc"): the body ends with the connection."""

    def send_header(self, keyword, value):
        super().send_header(keyword, f"{value}abc" if keyword == "Content-Length" else value)

    def log_message(self, *args):
        pass


def test_a_content_length_that_is_not_a_length_is_ignored_not_a_traceback(store, tmp_path):
    directory = tmp_path / "mirror"
    publish_mirror(store, directory)
    with local_server(functools.partial(BadLengthHandler, directory=str(directory))) as (_, url):
        result = CliRunner().invoke(cli.main, ["--zoo", ZOO, "--source", url, "--root", str(tmp_path / "r"),
                                               "--quiet"])
    assert result.exit_code == 0, result.output
    ZooStore(tmp_path / "r" / ZOO).verify()


def test_a_population_named_twice_by_file_is_refused(tmp_path):
    result = CliRunner().invoke(cli.main, ["--zoo", "mnist_seed", "--source", "modelzoos", "--root", str(tmp_path),
                                           "--file", "original=a.zip", "--file", "original=b.zip"])
    assert result.exit_code == 2 and "--file names the original population twice" in result.output


@pytest.mark.parametrize("source", ["ftp://x", "file:///tmp/x", "s3://bucket/zoos"])
def test_a_source_with_an_unknown_url_scheme_is_refused_not_taken_for_a_path(tmp_path, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ZooSpecError, match="is not a source; use hub, modelzoos, mirror"):
        download_zoo(ZOO, source, root=tmp_path / "root")
    result = CliRunner().invoke(cli.main, ["--zoo", ZOO, "--source", source, "--root", str(tmp_path / "root")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").iterdir())


def _hub_error(cls, message):
    error = cls.__new__(cls)  # huggingface_hub's HTTP errors need a live response to construct
    Exception.__init__(error, message)
    return error


@pytest.mark.parametrize("zoo, error, expected", [
    ("mnist_seed", "RepositoryNotFoundError", "not published on the Hugging Face Hub (no such dataset repo); "
                                              "other sources: --source modelzoos"),
    (ZOO, "RepositoryNotFoundError", "other sources: --source mirror --url URL, a local store path, or "
                                     f"`zoo-build --zoo {ZOO}`"),
    (ZOO, "LocalEntryNotFoundError", "cannot get dataset zoo-twins/digits_seed from the Hugging Face Hub: the Hub "
                                     "cache holds no copy of it and cannot reach huggingface.co; no network?"),
])
def test_the_hub_says_what_is_missing_and_names_the_other_sources(tmp_path, monkeypatch, zoo, error, expected):
    import huggingface_hub
    from huggingface_hub import errors

    def fail(*args, **kwargs):
        raise _hub_error(getattr(errors, error), "404 Client Error\nRepository Not Found for url: ...\nmore")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    result = CliRunner().invoke(cli.main, ["--zoo", zoo, "--source", "hub", "--root", str(tmp_path), "--quiet"])
    assert result.exit_code == 1 and expected in result.output
    assert len(result.output.strip().splitlines()) == 1
    if zoo == ZOO:
        assert "modelzoos" not in result.output  # digits_seed is not a published Model Zoo
