"""Download: an HTTP mirror on 127.0.0.1 (cut and resumed transfers, a corrupt shard), the Hub offline."""

from __future__ import annotations

import functools
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from _fixtures_loader import shared_loader_store
from _http import local_server, range_start, send_bytes
from click.testing import CliRunner

from builders.publish import publish_mirror
from loaders import ZooTwinDataset, cli
from loaders.download import download_zoo
from releases import network
from zoo_dataset.errors import ChecksumError, StoreError
from zoo_dataset.store import ZooStore

ZOO = "digits_seed"


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with Range support; can cut the first transfer of a path after N bytes."""

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        start = range_start(self)
        self.server.requests.append((self.path, start))
        send_bytes(self, path.read_bytes(), start, self.server.cut.pop(self.path, None))

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ZooStore(shared_loader_store(tmp_path_factory))


@pytest.fixture
def mirror(store, tmp_path, monkeypatch):
    monkeypatch.setattr(network, "BACKOFF_S", 0.0)  # a cut transfer is resumed at once
    directory = tmp_path / "mirror"
    publish_mirror(store, directory)
    with local_server(functools.partial(RangeHandler, directory=str(directory))) as (server, url):
        server.requests, server.cut = [], {}
        yield server, directory, url


def _same_arrays(a: ZooStore, b: ZooStore, population: str) -> None:
    for shard in a.population(population).shards:
        for model_id in shard.model_ids:
            level = a.population(population).levels[-1]
            np.testing.assert_array_equal(
                a.weights(population, model_id, -1, level), b.weights(population, model_id, -1, level)
            )


def test_mirror_download_resumes_a_cut_transfer(store, mirror, tmp_path):
    server, _, url = mirror
    shard = store.population("mp").shards[0]
    size = (store.zoo_dir / shard.file).stat().st_size
    server.cut[f"/{ZOO}/{shard.file}"] = size // 2
    path = download_zoo(ZOO, "mirror", url=url, root=tmp_path / "cache", progress=False)
    assert (f"/{ZOO}/{shard.file}", size // 2) in server.requests  # the retry asked for the rest only
    got = ZooStore(path)
    got.verify()
    assert set(got.populations) == set(store.populations)
    _same_arrays(store, got, "mp")
    assert not list(path.rglob("*.part"))


def test_mirror_download_continues_a_part_file_left_by_a_killed_run(store, mirror, tmp_path):
    server, _, url = mirror
    shard = store.population("vd").shards[0]
    dest = tmp_path / "cache" / f".{ZOO}.download" / shard.file  # the staging folder beside the target
    dest.parent.mkdir(parents=True)
    data = (store.zoo_dir / shard.file).read_bytes()
    dest.with_name(dest.name + ".part").write_bytes(data[:1000])
    path = download_zoo(
        ZOO, "mirror", url=url, root=tmp_path / "cache", populations=["original", "vd"], progress=False
    )
    assert (f"/{ZOO}/{shard.file}", 1000) in server.requests
    assert set(ZooStore(path).populations) == {"original", "vd"}
    assert len(ZooTwinDataset(ZOO, method="vd", split=None, root=tmp_path / "cache")) == len(store.models())


def test_mirror_url_as_source_records_its_origin_and_adds_missing_populations(store, mirror, tmp_path):
    _, _, url = mirror
    path = download_zoo(ZOO, url, root=tmp_path / "cache", populations=["original"], progress=False)
    assert ZooStore(path).manifest.origin == {"source": "mirror", "location": url, "revision": None}
    ds = ZooTwinDataset(ZOO, method="mp", split=None, root=tmp_path / "cache", download=True, source=url)
    assert set(ds.store.populations) == {"original", "mp"}
    _same_arrays(store, ds.store, "mp")


def test_corrupt_shard_is_rejected_and_not_kept(store, mirror, tmp_path):
    _, directory, url = mirror
    shard = store.population("mp").shards[0]
    served = directory / ZOO / shard.file
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 0xFF
    served.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=f"{shard.file} from .* is corrupt"):
        download_zoo(ZOO, "mirror", url=url, root=tmp_path / "cache", progress=False)
    target = tmp_path / "cache" / ZOO
    assert not (target / shard.file).exists() and not list(target.rglob("*.part"))
    assert not (target / "manifest.json").exists()  # an aborted download is never mistaken for a store


def test_missing_mirror_file_is_one_clear_error(mirror, tmp_path):
    _, _, url = mirror
    with pytest.raises(StoreError, match="has no manifest.json"):
        download_zoo("mnist_seed", "mirror", url=url, root=tmp_path, progress=False)


def _hub_cache(store: ZooStore, hf_home: Path, repo_id: str) -> None:
    """A Hub cache as huggingface_hub lays it out: datasets--org--name/{refs/main, snapshots/<commit>/}."""
    repo = hf_home / "hub" / f"datasets--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    publish_mirror(store, repo / "snapshots")
    (repo / "snapshots" / ZOO).rename(repo / "snapshots" / commit)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1, the Hub cache under tmp_path (constants are read at import: patched too)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("ZOO_TWINS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "hf"


def test_hub_download_from_an_offline_cache_via_the_cli(store, offline_hub, tmp_path):
    _hub_cache(store, offline_hub, "testorg/digits-twins")
    args = ["--zoo", ZOO, "--repo-id", "testorg/digits-twins", "--populations", "original,mp", "--quiet"]
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    got = ZooStore(tmp_path / "cache" / ZOO)
    assert set(got.populations) == {"original", "mp"}
    got.verify()
    _same_arrays(store, got, "mp")
    mixed = CliRunner().invoke(cli.main, ["--zoo", ZOO, "--repo-id", "testorg/other"])
    assert mixed.exit_code == 1 and "it is not mixed with hub testorg/other" in mixed.output  # another source
    missing = CliRunner().invoke(cli.main, ["--zoo", ZOO, "--repo-id", "testorg/other", "--root", str(tmp_path / "o")])
    assert missing.exit_code == 1 and missing.output.startswith("error: cannot get dataset testorg/other")


def test_dataset_download_true_uses_the_hub_cache(store, offline_hub, tmp_path):
    _hub_cache(store, offline_hub, f"zoo-twins/{ZOO}")
    ds = ZooTwinDataset(ZOO, method="vd", split=None, download=True)
    assert ds.store.zoo_dir == tmp_path / "cache" / ZOO
    assert len(ZooTwinDataset(ZOO, method="vd", split=None)) == len(ds)  # found again without download
