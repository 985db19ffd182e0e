"""A store under bad luck and careless use: a second writer, stale locks and temporaries, a store
found by the wrong name, swapped or duplicated entries, a flipped chunk, a lost chunk, a rewritten
models table, a deleted shard."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pandas as pd
import pytest
from _fixtures_loader import shared_loader_store
from click.testing import CliRunner

from analysis import cli as report_cli
from builders.build import build_zoo
from builders.cli import main as build_cli
from loaders import ZooTwinDataset, open_store
from loaders.download import download_zoo
from zoo_dataset.errors import ChecksumError, StoreError
from zoo_dataset.model_layout import layout_for
from zoo_dataset.specs import get_spec
from zoo_dataset.store import StoreWriter, ZooStore
from zoo_dataset.store.lock import lock_path, writer_lock

ZOO = "digits_seed"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ZooStore(shared_loader_store(tmp_path_factory))


def copy_of(store: ZooStore, directory) -> ZooStore:
    shutil.copytree(store.zoo_dir, directory / ZOO)
    return ZooStore(directory / ZOO)


def edit_manifest(zoo_dir, change) -> None:
    path = zoo_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reseal(zoo_dir, population: str, index: int = 0) -> None:
    """Record a changed shard's and states table's sha256 and size in the manifest, as a careless
    tool (or a hostile one) would after editing them: only the content checks can tell then."""
    def change(manifest):
        shard = manifest["populations"][population]["shards"][index]
        for file, digest, size in (("file", "sha256", "bytes"), ("states_file", "states_sha256", "states_bytes")):
            shard.update({digest: sha256(zoo_dir / shard[file]), size: (zoo_dir / shard[file]).stat().st_size})

    edit_manifest(zoo_dir, change)


# ---------------------------------------------------------------------------- one writer per store
HOLDER = textwrap.dedent("""
    import sys, pathlib
    from zoo_dataset.store.lock import writer_lock
    with writer_lock(pathlib.Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.readline()
""")


def test_a_second_writer_is_refused_in_one_line_naming_the_first(store, tmp_path):
    """Two zoo-build runs on one --out once both exited 0 and lost a population."""
    zoo_dir = tmp_path / "stores" / ZOO
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(zoo_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = ["--zoo", ZOO, "--models", "0", "--epochs", "1", "--stages", "original", "--quiet",
                "--out", str(tmp_path / "stores")]
        result = CliRunner().invoke(build_cli, args)
        assert result.exit_code == 1
        assert result.output.count("\n") == 1
        assert result.output.startswith(f"error: {zoo_dir} is being written by pid {holder.pid} on ")
        assert not zoo_dir.exists()
        with pytest.raises(StoreError, match=f"pid {holder.pid}"):
            download_zoo(ZOO, str(store.zoo_dir), root=tmp_path / "stores", progress=False)
    finally:
        holder.communicate("\n", timeout=60)
    assert not lock_path(zoo_dir).exists()  # released and removed by its owner


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    zoo_dir = tmp_path / ZOO
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock_path(zoo_dir).write_text(json.dumps({"pid": int(dead.stdout), "host": "here", "since": "then",
                                              "command": "zoo-build"}))
    with writer_lock(zoo_dir) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not lock_path(zoo_dir).exists()


def test_only_the_stores_own_temporaries_are_removed(store, tmp_path):
    """remove_stale_tmp once deleted every *.tmp under the zoo folder, a user's files included."""
    copy = copy_of(store, tmp_path).zoo_dir
    own = [copy / "manifest.json.4242.tmp", copy / "mp" / "shard-00000.h5.4242.tmp",
           copy / "_staging" / "vd" / "m000001-l0.0000.h5.77.tmp"]
    users = [copy / "notes.tmp", copy / "mp" / "analysis.tmp", copy / "scratch" / "shard-00000.h5.1.tmp"]
    for path in own + users:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    spec = store.spec
    StoreWriter.open(tmp_path, spec, layout_for(spec), resume=True)
    assert not any(p.exists() for p in own)
    assert all(p.exists() for p in users)


# ---------------------------------------------------------------------------- names and roots
def test_an_explicit_root_is_the_only_place_looked_at(store, tmp_path, monkeypatch):
    """A ./digits_seed folder in the working directory once won over root= (loader and zoo-report)."""
    copy_of(store, tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other").mkdir()
    with pytest.raises(StoreError, match=f"zoo '{ZOO}' is not at {tmp_path / 'other' / ZOO}"):
        open_store(ZOO, root=tmp_path / "other")
    with pytest.raises(StoreError, match="is not at"):
        ZooTwinDataset(ZOO, method="mp", root=tmp_path / "other")
    result = CliRunner().invoke(report_cli.main, ["--zoo", ZOO, "--root", str(tmp_path / "other")])
    assert result.exit_code == 1 and result.output.startswith(f"error: zoo '{ZOO}' is not at")
    assert open_store(f"./{ZOO}").zoo_dir.resolve() == (tmp_path / ZOO).resolve()  # a path is a path


@pytest.mark.parametrize(("command", "args"), [
    (report_cli.main, ["--zoo", ""]),
    (report_cli.main, ["--zoo", ".."]),
    (build_cli, ["--zoo", "../escaped", "--models", "0", "--epochs", "1"]),
])
def test_zoo_names_that_are_not_names_are_one_line_and_write_nothing(tmp_path, monkeypatch, command, args):
    monkeypatch.chdir(tmp_path)
    flag = "--root" if command is report_cli.main else "--out"
    result = CliRunner().invoke(command, [*args, flag, str(tmp_path / "root")])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: ")
    assert not any(tmp_path.iterdir())


def test_a_store_found_by_name_must_be_that_zoo(store, tmp_path):
    shutil.copytree(store.zoo_dir, tmp_path / "mnist_seed")
    with pytest.raises(StoreError, match="holds zoo 'digits_seed', not 'mnist_seed'"):
        open_store("mnist_seed", root=tmp_path)


# ---------------------------------------------------------------------------- damage
def test_shards_whose_ids_disagree_with_the_manifest_are_refused(store, tmp_path):
    """Swapping two shards' model ids in the manifest once served mislabelled twins."""
    copy = copy_of(store, tmp_path)
    assert len(copy.population("mp").shards[0].model_ids) > 1
    edit_manifest(copy.zoo_dir, lambda m: m["populations"]["mp"]["shards"][0]["model_ids"].reverse())
    reopened = ZooStore(copy.zoo_dir)
    level = reopened.population("mp").levels[0]
    with pytest.raises(StoreError, match="holds models .* the manifest says"):
        reopened.weights("mp", reopened.population("mp").shards[0].model_ids[0], -1, level)
    with pytest.raises(StoreError, match="holds models"):
        reopened.verify()


def test_a_states_table_listed_twice_or_with_duplicate_rows_is_refused(store, tmp_path):
    copy = copy_of(store, tmp_path)

    def twice(manifest):
        shards = manifest["populations"]["original"]["shards"]
        shards.append({**shards[0], "index": 1, "file": "original/shard-00001.h5"})

    edit_manifest(copy.zoo_dir, twice)
    with pytest.raises(StoreError, match="lists original/shard-00000.states.parquet twice"):
        ZooStore(copy.zoo_dir)
    shutil.rmtree(copy.zoo_dir)
    copy = copy_of(store, tmp_path)
    shard = copy.population("vd").shards[0]
    table = pd.read_parquet(copy.zoo_dir / shard.states_file)
    doubled = pd.concat([table.iloc[:1], table]).reset_index(drop=True)  # one state twice: all shift by one
    doubled.iloc[:-1].to_parquet(copy.zoo_dir / shard.states_file, index=False)
    reseal(copy.zoo_dir, "vd")
    with pytest.raises(StoreError, match="one row per model, level and epoch"):
        ZooStore(copy.zoo_dir).states("vd")


def test_a_rewritten_models_table_fails_open_and_verify(store, tmp_path):
    """A rewritten split column once passed verify()."""
    copy = copy_of(store, tmp_path)
    table = copy.models()
    table["split"] = "train"
    table.to_parquet(copy.zoo_dir / "models.parquet", index=False)
    with pytest.raises(ChecksumError, match="models table was changed or damaged"):
        ZooStore(copy.zoo_dir)
    with pytest.raises(ChecksumError):
        copy.verify()


def chunk_location(path, dataset, index):
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(index)
        return info.byte_offset, info.size


def test_a_flipped_chunk_raises_on_read(store, tmp_path):
    copy = copy_of(store, tmp_path)
    shard = copy.population("vd").shards[0]
    path = copy.zoo_dir / shard.file
    offset, size = chunk_location(path, "log_alpha", 1)  # model 0, epoch 1
    with open(path, "r+b") as fh:
        fh.seek(offset + size // 2)
        byte = fh.read(1)
        fh.seek(offset + size // 2)
        fh.write(bytes([byte[0] ^ 0x01]))
    reader = ZooStore(copy.zoo_dir, verify_checksums=False)
    np.testing.assert_array_equal(reader.array("log_alpha", "vd", shard.model_ids[0], 0),
                                  store.array("log_alpha", "vd", shard.model_ids[0], 0))  # other chunks read
    with pytest.raises(StoreError, match="is corrupt"):
        reader.array("log_alpha", "vd", shard.model_ids[0], 1)


def test_a_lost_chunk_is_refused_instead_of_served_as_zeros(store, tmp_path):
    """HDF5 serves a fill value for a chunk it cannot find: an all-zero twin, an empty mask."""
    copy = copy_of(store, tmp_path)
    shard = copy.population("mp").shards[0]
    source, holed = copy.zoo_dir / shard.file, tmp_path / "holed.h5"
    with h5py.File(source, "r") as f, h5py.File(holed, "w") as out:
        for name in f:
            if name == "masks":
                ds = out.create_dataset(name, shape=f[name].shape, dtype=f[name].dtype, chunks=f[name].chunks)
                ds[1:] = f[name][1:]  # model 0's chunks never written
            else:
                f.copy(name, out)
    os.replace(holed, source)
    reseal(copy.zoo_dir, "mp")
    reader = ZooStore(copy.zoo_dir)
    with pytest.raises(StoreError, match="lacks chunks of its masks"):
        reader.array("masks", "mp", shard.model_ids[0], -1, reader.population("mp").levels[0])


def test_downloaded_stores_verify_each_shard_on_first_open(store, tmp_path):
    path = download_zoo(ZOO, str(store.zoo_dir), root=tmp_path / "cache", progress=False)
    shard = ZooStore(path).population("original").shards[0]
    data = bytearray((path / shard.file).read_bytes())
    data[-10] ^= 0xFF  # past the datasets: only the checksum can tell
    (path / shard.file).write_bytes(bytes(data))
    assert ZooStore(path).verify_checksums and not store.verify_checksums
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        ZooStore(path).weights("original", shard.model_ids[0])
    with pytest.raises(ChecksumError):
        ZooTwinDataset(ZOO, method="mp", split=None, root=tmp_path / "cache")[0]
    ZooStore(path, verify_checksums=False).weights("original", shard.model_ids[0])  # opt-out


# ---------------------------------------------------------------------------- repair
def test_resume_rebuilds_a_deleted_shard(tmp_path):
    """The reader's advice for a missing shard ("rebuild with zoo-build --resume") once did nothing."""
    spec = get_spec(ZOO).with_overrides(model_subset=range(4), epochs=1, models_per_shard=2)
    built, _ = build_zoo(spec, tmp_path, stages=["original"], progress=False)
    before = {m: built.weights("original", m, slice(None)) for m in range(4)}
    shard = built.population("original").shards[1]
    (built.zoo_dir / shard.file).unlink()
    with pytest.raises(StoreError, match="rebuild with zoo-build --resume"):
        ZooStore(built.zoo_dir).weights("original", shard.model_ids[0])
    rebuilt, reports = build_zoo(spec, tmp_path, stages=["original"], resume=True, progress=False)
    assert reports[0].units_trained == 2
    rebuilt.verify()
    for model_id, weights in before.items():
        np.testing.assert_array_equal(rebuilt.weights("original", model_id, slice(None)), weights)
