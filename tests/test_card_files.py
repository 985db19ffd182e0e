"""Every file the dataset card offers (README.md, croissant.json, the parquet configs under data/) is
in the manifest with its sha256: ``ZooStore.verify()``, ``zoo-download --verify`` and downloads check
it as they check the shards. A card written before the manifest recorded its files is reported as
unchecked, never refused."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _fixtures_loader import shared_loader_store
from click.testing import CliRunner

from builders.stages.card import write_card
from loaders import cli as download_cli
from loaders.download import download_zoo
from zoo_dataset.errors import ChecksumError, StoreError
from zoo_dataset.store import ZooStore
from zoo_dataset.store.layout_on_disk import card_data_files

ZOO = "digits_seed"


@pytest.fixture(scope="module")
def carded(tmp_path_factory):
    """The shared store with its card written (once per module)."""
    copy = tmp_path_factory.mktemp("carded") / ZOO
    shutil.copytree(shared_loader_store(tmp_path_factory), copy)
    write_card(ZooStore(copy))
    return copy


@pytest.fixture
def store(carded, tmp_path):
    copy = tmp_path / "root" / ZOO
    shutil.copytree(carded, copy)
    return copy


def edit_parquet(path, column, value) -> None:
    """Set every cell of ``column`` to ``value``, keeping the file's schema (and its features)."""
    table = pq.read_table(path)
    index = table.schema.get_field_index(column)
    cells = pa.array([value] * len(table), type=table.schema.field(index).type)
    pq.write_table(table.set_column(index, table.schema.field(index), cells), path)


def first(store, config):
    return store / next(f for f in card_data_files(store) if f.startswith(f"data/{config}/"))


def test_the_manifest_lists_every_file_the_card_offers(store):
    listed = ZooStore(store).manifest.card_files
    assert set(listed) == {"README.md", "croissant.json", *card_data_files(store)}
    assert any(f.startswith("data/pairs_vd/") for f in listed) and any(f.startswith("data/states_mp/") for f in listed)
    assert ZooStore(store).verify() == []


@pytest.mark.parametrize(("config", "column", "value"), [
    ("pairs_vd", "twin", [7.0]),  # a twin's weights (a fixed-length list column)
    ("states_vd", "test_acc", 0.999),
    ("models", "split", "train"),  # the first file is the test split's
])
def test_an_edited_parquet_config_fails_verify_and_the_download_check(store, tmp_path, config, column, value):
    """Once, ``verify()`` and ``zoo-download --verify`` passed such an edit and ``datasets`` served it."""
    path = first(store, config)
    if column == "twin":
        length = pq.read_table(path).schema.field("twin").type.list_size
        value = [7.0] * length
    edit_parquet(path, column, value)
    with pytest.raises(ChecksumError, match="changed or damaged"):
        ZooStore(store).verify()
    with pytest.raises(StoreError, match="corrupt|larger than"):  # a download checks it like a shard, keeps nothing
        download_zoo(ZOO, str(store), root=tmp_path / "downloads", progress=False)
    assert not (tmp_path / "downloads" / ZOO).exists()


@pytest.mark.parametrize("file", ["README.md", "croissant.json"])
def test_an_edited_card_or_croissant_fails_verify(store, file):
    (store / file).write_text((store / file).read_text().replace("model", "m0del", 1))
    with pytest.raises(ChecksumError):
        ZooStore(store).verify()


def test_a_parquet_file_the_card_does_not_list_fails_verify(store):
    """A Croissant reader takes in data/<config>/*.parquet: an added file would be served."""
    shutil.copy(first(store, "states_vd"), store / "data" / "states_vd" / "extra-00000-of-00001.parquet")
    with pytest.raises(StoreError, match="not a file the manifest lists for the card"):
        ZooStore(store).verify()


def test_a_missing_card_file_fails_verify(store):
    first(store, "pairs_mp").unlink()
    with pytest.raises(StoreError, match="a file of the card, is missing"):
        ZooStore(store).verify()


def test_a_download_carries_the_card_files_and_zoo_download_verify_checks_them(store, tmp_path):
    root = tmp_path / "downloads"
    result = CliRunner().invoke(download_cli.main, ["--zoo", ZOO, "--source", str(store), "--root", str(root),
                                                    "--verify", "--quiet"])
    assert result.exit_code == 0, result.output
    assert set(ZooStore(root / ZOO).manifest.card_files) == {"README.md", "croissant.json",
                                                             *card_data_files(root / ZOO)}
    assert (root / ZOO / "croissant.json").read_bytes() == (store / "croissant.json").read_bytes()


def test_a_card_of_an_older_toolkit_is_reported_unchecked_not_refused(store, tmp_path):
    manifest = json.loads((store / "manifest.json").read_text())
    del manifest["card_files"]  # as a store built before the manifest recorded the card's files
    (store / "manifest.json").write_text(json.dumps(manifest))
    edit_parquet(first(store, "states_vd"), "test_acc", 0.999)
    notes = ZooStore(store).verify()
    assert len(notes) == 1 and "unchecked" in notes[0] and "--stages card" in notes[0]
    result = CliRunner().invoke(download_cli.main, ["--zoo", ZOO, "--source", str(store), "--root",
                                                    str(tmp_path / "dl"), "--verify", "--quiet"])
    assert result.exit_code == 0 and "warning: the card's files" in result.output  # only README.md came along
    write_card(ZooStore(store))  # rewriting the card records its files
    assert ZooStore(store).verify() == []
