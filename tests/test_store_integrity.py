"""A store under bad luck and careless use: a second writer, stale locks and temporaries, a store
found by the wrong name, swapped or duplicated entries, a flipped chunk, a lost chunk, a rewritten
models table, a deleted shard."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import string
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from _fixtures_loader import shared_loader_store
from _inputs import hang_guard
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
from zoo_dataset.store.migrate import migrate_store

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


def lose_chunks(zoo_dir, population: str):
    """Rewrite shard 0 of ``population`` without the masks chunks of its first model (manifest
    resealed, attributes of an older toolkit); returns the shard's manifest entry."""
    shard = ZooStore(zoo_dir).population(population).shards[0]
    source, holed = zoo_dir / shard.file, zoo_dir / "holed.h5"
    with h5py.File(source, "r") as f, h5py.File(holed, "w") as out:
        for name in f:
            if name == "masks":
                ds = out.create_dataset(name, shape=f[name].shape, dtype=f[name].dtype, chunks=f[name].chunks)
                ds[1:] = f[name][1:]  # model 0's chunks never written
            else:
                f.copy(name, out)
    os.replace(holed, source)
    reseal(zoo_dir, population)
    return shard


def test_a_lost_chunk_is_refused_instead_of_served_as_zeros(store, tmp_path):
    """HDF5 serves a fill value for a chunk it cannot find: an all-zero twin, an empty mask."""
    copy = copy_of(store, tmp_path)
    shard = lose_chunks(copy.zoo_dir, "mp")
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


# ---------------------------------------------------------------------------- states tables (issue 25.1)
def damage_states(zoo_dir, population: str, change) -> None:
    """Rewrite one shard's states table through pandas (the manifest is left as it was)."""
    path = zoo_dir / ZooStore(zoo_dir).population(population).shards[0].states_file
    change(pd.read_parquet(path)).to_parquet(path, index=False)


def set_cell(column: str, value, row: int = -1):
    """A change of one cell (default: the last row's)."""
    def change(table):
        values = table[column].to_numpy().copy()
        values[row] = value
        return table.assign(**{column: values})
    return change


STATES_DAMAGE = {
    "changed epoch": set_cell("epoch", 7),  # no duplicate: only the row and sha256 checks could tell
    "NaN test_acc": set_cell("test_acc", float("nan"), row=0),
    "dropped column": lambda t: t.drop(columns=["train_loss"]),
}


@pytest.mark.parametrize("damage", list(STATES_DAMAGE))
def test_a_changed_states_table_is_never_served(store, tmp_path, damage):
    """A changed epoch, a NaN cell (the property then vanished from every item) and a dropped column
    were served by ZooStore.states(), twin_properties and zoo-report: only verify() hashed tables."""
    copy = copy_of(store, tmp_path).zoo_dir
    damage_states(copy, "vd", STATES_DAMAGE[damage])
    with pytest.raises(ChecksumError, match="states.parquet: the file was changed or damaged"):
        ZooStore(copy).states("vd")
    with pytest.raises(ChecksumError):
        ZooTwinDataset(copy, method="vd", split=None)
    result = CliRunner().invoke(report_cli.main, ["--zoo", str(copy), "--out", str(tmp_path / "report")])
    assert result.exit_code == 1 and result.output.startswith("error: checksum mismatch for"), result.output
    ZooStore(copy).states("mp")  # the other populations' tables still serve


def test_random_byte_flips_in_a_states_table_are_refused_downloaded_or_not(store, tmp_path):
    """4 of 30 random flips (and one bit in a downloaded store) once changed test_acc / train_loss."""
    downloaded = download_zoo(ZOO, str(store.zoo_dir), root=tmp_path / "cache", progress=False)
    built = copy_of(store, tmp_path).zoo_dir
    rng = np.random.default_rng(25)
    for zoo_dir in (downloaded, built):
        path = zoo_dir / ZooStore(zoo_dir).population("mp").shards[0].states_file
        pristine = path.read_bytes()
        for offset in rng.integers(0, len(pristine), 12):
            data = bytearray(pristine)
            data[offset] ^= 1 << int(rng.integers(8))
            path.write_bytes(bytes(data))
            with pytest.raises(ChecksumError, match="was changed or damaged"):
                ZooStore(zoo_dir).states("mp")
        path.write_bytes(pristine)
        pd.testing.assert_frame_equal(ZooStore(zoo_dir).states("mp"), store.states("mp"))


@pytest.mark.parametrize(("change", "message"), [
    (set_cell("epoch", 7), "one row per model, level and epoch"),
    (set_cell("sparsity", float("nan")), "non-finite values in sparsity"),
    (lambda t: t.drop(columns=["population"]), "lacks the columns"),
])
def test_states_table_contents_are_checked_even_under_a_matching_sha256(store, tmp_path, change, message):
    """A table whose manifest entry was rewritten to match: its rows, keys and sparsities still must hold."""
    copy = copy_of(store, tmp_path).zoo_dir
    damage_states(copy, "vd", change)
    reseal(copy, "vd")
    with pytest.raises(StoreError, match=message):
        ZooStore(copy).states("vd")
    with pytest.raises(StoreError, match=message):
        ZooStore(copy).verify()


# ---------------------------------------------------------------------------- the manifest's content (issue 25.2)
def shift_offset(manifest):
    manifest["layout"][3]["offset"] += 1  # one changed digit: every later view shifts


def reshape_first_layer(manifest):
    """Consistent offsets, but not the architecture's shapes: conv1 with 7 filters instead of 8."""
    layout, offset = manifest["layout"], 0
    layout[0]["shape"][0] -= 1
    layout[1]["shape"][0] -= 1
    for entry in layout:
        entry["offset"] = offset
        offset += int(np.prod(entry["shape"]))


def drop_masks(manifest):
    manifest["populations"]["vd"]["arrays"].remove("masks")


@pytest.mark.parametrize(("change", "message"), [
    (shift_offset, "starts at"),
    (reshape_first_layer, "its layout is not that of"),
    (drop_masks, "population vd lists the arrays"),
])
def test_a_manifest_whose_layout_or_arrays_were_changed_is_refused(store, tmp_path, change, message):
    """A shifted offset once shifted the layers/tokens views and model(); removing "masks" from the
    vd arrays served VD twins unmasked; verify() passed both."""
    copy = copy_of(store, tmp_path).zoo_dir
    edit_manifest(copy, change)
    with pytest.raises(StoreError, match=message):
        ZooStore(copy)
    with pytest.raises(StoreError, match=message):
        open_store(copy)


def test_each_shard_records_the_manifest_it_was_packed_for(store, tmp_path):
    """A shard's attribute pins the manifest's layout, levels, epochs and arrays of its population;
    a shard of an older toolkit (no attribute) is checked by its contents only and still reads."""
    copy = copy_of(store, tmp_path).zoo_dir
    shard = ZooStore(copy).population("mp").shards[0]
    with h5py.File(copy / shard.file, "r+") as f:
        assert f.attrs["manifest_sha256"] == ZooStore(copy).manifest.packing_digest("mp")
        f.attrs["manifest_sha256"] = "0" * 64
    reseal(copy, "mp")
    with pytest.raises(StoreError, match="was packed for another manifest"):
        ZooStore(copy).weights("mp", shard.model_ids[0], -1, store.population("mp").levels[0])
    with pytest.raises(StoreError, match="was packed for another manifest"):
        ZooStore(copy).verify()
    with h5py.File(copy / shard.file, "r+") as f:
        del f.attrs["manifest_sha256"]
    reseal(copy, "mp")
    ZooStore(copy).verify()


@pytest.mark.parametrize(("key", "value"), [("dataset", "mnist"), ("vd", {"threshold": 2.0}),
                                          ("vd", {"variant": "elbo"})])
def test_a_spec_changed_in_the_manifest_is_refused_on_the_shards_first_open(store, tmp_path, key, value):
    """The spec says which data a store's models were trained on and where VD prunes; an edited
    spec once passed every check and was served to the report, the card and the transforms."""
    copy = copy_of(store, tmp_path).zoo_dir

    def change(manifest):
        spec = manifest["spec"]
        spec[key] = {**spec[key], **value} if isinstance(value, dict) else value

    edit_manifest(copy, change)
    for population in ("original", "vd"):
        with pytest.raises(StoreError, match="was packed for another manifest"):
            ZooStore(copy).array("weights", population, store.population(population).shards[0].model_ids[0])
        with pytest.raises(StoreError, match="was packed for another manifest"):  # the report's tables
            ZooStore(copy).states(population)
    with pytest.raises(StoreError, match="was packed for another manifest"):
        ZooStore(copy).verify()


def test_a_shard_holding_arrays_the_manifest_does_not_list_is_refused(store, tmp_path):
    """Checked against the shard itself too, so an older shard without the digest is covered."""
    copy = copy_of(store, tmp_path).zoo_dir
    shard = ZooStore(copy).population("original").shards[0]
    with h5py.File(copy / shard.file, "r+") as f:
        if "manifest_sha256" in f.attrs:  # as a shard of an older toolkit
            del f.attrs["manifest_sha256"]
        f["masks"] = np.ones(f["weights"].shape, dtype=bool)
    reseal(copy, "original")
    with pytest.raises(StoreError, match=r"holds the arrays \['masks', 'weights'\]"):
        ZooStore(copy).weights("original", shard.model_ids[0])


# ---------------------------------------------------------------------------- writers as strict as readers (25.6, 25.7)
def link_outside(zoo_dir, folder: str, outside):
    """Move (or create) ``zoo_dir/folder`` to ``outside`` and leave a link in its place."""
    if (zoo_dir / folder).exists():
        shutil.move(zoo_dir / folder, outside)
    else:
        outside.mkdir(parents=True)
    (zoo_dir / folder).symlink_to(outside, target_is_directory=True)
    return {p.name: sha256(p) for p in outside.iterdir()}


def test_migrate_refuses_a_population_folder_linked_outside(store, tmp_path):
    """zoo-build --migrate once rewrote shards through a linked vd/."""
    from test_schema import as_schema_1

    zoo_dir = copy_of(store, tmp_path / "stores").zoo_dir
    as_schema_1(zoo_dir)
    before = link_outside(zoo_dir, "vd", tmp_path / "elsewhere")
    result = CliRunner().invoke(build_cli, ["--migrate", "--zoo", ZOO, "--out", str(zoo_dir.parent), "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"error: {zoo_dir / 'vd'} is a link to")
    assert {p.name: sha256(p) for p in (tmp_path / "elsewhere").iterdir()} == before


def test_the_card_stage_refuses_a_data_folder_linked_outside(store, tmp_path):
    """--stages card --resume once rewrote the Hub tables through a linked data/."""
    from builders.hub_tables import write_hub_tables

    zoo_dir = copy_of(store, tmp_path).zoo_dir
    link_outside(zoo_dir, "data", tmp_path / "elsewhere")
    with pytest.raises(StoreError, match="is a link to .* outside the store"):
        write_hub_tables(ZooStore(zoo_dir))
    assert not any((tmp_path / "elsewhere").iterdir())


def test_a_build_refuses_a_staging_folder_linked_outside(store, tmp_path):
    """A linked _staging once received a build's unit files."""
    zoo_dir = copy_of(store, tmp_path).zoo_dir
    link_outside(zoo_dir, "_staging", tmp_path / "elsewhere")
    with pytest.raises(StoreError, match="_staging is a link to"):
        StoreWriter.open(tmp_path, store.spec, layout_for(store.spec), resume=True)
    assert not any((tmp_path / "elsewhere").iterdir())


def test_a_download_refuses_a_linked_staging_folder(store, tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / f".{ZOO}.download").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(StoreError, match="is a link; downloads assemble"):
        download_zoo(ZOO, str(store.zoo_dir), root=root, progress=False)
    assert not any((tmp_path / "elsewhere").iterdir()) and not (root / ZOO).exists()


def test_two_paths_to_one_store_share_its_lock(tmp_path):
    """With lk2/<zoo> -> lk1/<zoo> two resumes once ran at once: the lock was keyed on the path given."""
    (tmp_path / "lk1" / ZOO).mkdir(parents=True)
    (tmp_path / "lk2").mkdir()
    (tmp_path / "lk2" / ZOO).symlink_to(tmp_path / "lk1" / ZOO, target_is_directory=True)
    (tmp_path / "lk3").symlink_to(tmp_path / "lk1", target_is_directory=True)  # a linked root
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "lk1" / ZOO)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for other in (tmp_path / "lk2" / ZOO, tmp_path / "lk3" / ZOO):
            with pytest.raises(StoreError, match=f"is being written by pid {holder.pid}"), writer_lock(other):
                pass
    finally:
        holder.communicate("\n", timeout=60)


# ---------------------------------------------------------------------------- only regular files (25.9)
@pytest.mark.parametrize("kind", ["/dev/zero", "fifo"])
def test_a_shard_or_table_that_is_not_a_regular_file_is_refused_not_read_forever(store, tmp_path, kind):
    """verify() and a downloaded store's first open once hung on a shard linked to /dev/zero or a FIFO."""
    zoo_dir = download_zoo(ZOO, str(store.zoo_dir), root=tmp_path / "cache", progress=False)
    shard = ZooStore(zoo_dir).population("mp").shards[0]
    for relative in (shard.file, shard.states_file):
        (zoo_dir / relative).unlink()
        if kind == "fifo":
            os.mkfifo(zoo_dir / relative)
        else:
            (zoo_dir / relative).symlink_to(kind)
    level = store.population("mp").levels[0]
    with hang_guard():
        for verify_checksums in (None, False):  # downloaded: hashed on first open; or not hashed at all
            with pytest.raises(StoreError, match="is not a regular file"):
                ZooStore(zoo_dir, verify_checksums).weights("mp", shard.model_ids[0], -1, level)
        with pytest.raises(StoreError, match="is not a regular file"):
            ZooStore(zoo_dir).states("mp")
        with pytest.raises(StoreError, match="is not a regular file"):
            ZooStore(zoo_dir).verify()
        repaired = download_zoo(ZOO, str(store.zoo_dir), root=tmp_path / "cache", progress=False)
        ZooStore(repaired).verify()
        (repaired / "manifest.json").unlink()
        os.mkfifo(repaired / "manifest.json")
        with pytest.raises(StoreError, match="is not a regular file"):
            ZooStore(repaired)


# ---------------------------------------------------------------------------- clear errors (25.12)
@pytest.mark.parametrize("array", ["weights", "masks"])
def test_a_bad_level_index_is_named_not_reported_as_a_corrupt_shard(store, array):
    model = store.population("mp").shards[0].model_ids[0]
    levels = len(store.population("mp").levels)
    with pytest.raises(StoreError, match=f"level index {levels} out of range: population mp has {levels} levels"):
        store.read("mp", array, model, levels, -1)
    with pytest.raises(StoreError, match="level index -1 out of range"):
        store.read("mp", array, model, -1, -1)


def test_a_rerun_of_a_killed_migration_removes_its_temporary(store, tmp_path):
    from test_schema import as_schema_1

    zoo_dir = copy_of(store, tmp_path).zoo_dir
    as_schema_1(zoo_dir)
    left = zoo_dir / "vd" / "shard-00000.h5.99999999.tmp"  # a killed migration's half-written shard
    left.write_bytes(b"half a shard")
    assert migrate_store(zoo_dir) == 3
    assert not left.exists()
    ZooStore(zoo_dir).verify()


# ---------------------------------------------------------------------------- another library's reader (25.4)
def card_snippet() -> str:
    """The card template's `datasets` code block, filled in as the card stage fills it."""
    from builders.stages.card import TEMPLATE

    text = string.Template(TEMPLATE.read_text()).safe_substitute(example_shard="mp/shard-00000.h5", zoo=ZOO,
                                                                 repo_id="zoo-twins/digits_seed")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if 'load_dataset("hdf5"' in b)


def verify_before_read(snippet: str) -> int:
    """The line of ``snippet`` that verifies the store; it must come before the shard is read."""
    lines = snippet.splitlines()
    verify = next(i for i, line in enumerate(lines) if ".verify()" in line)
    assert verify < next(i for i, line in enumerate(lines) if 'load_dataset("hdf5"' in line)
    return verify


def test_the_readmes_datasets_recipe_verifies_the_store_first():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    verify_before_read(next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
                            if 'load_dataset("hdf5"' in b))


def test_the_cards_datasets_snippet_verifies_the_copy_before_reading_a_shard(store, tmp_path, monkeypatch):
    """`datasets`' HDF5 reader serves zeros for a lost chunk (ZooStore refuses the same shard): the
    card's snippet verifies the local copy first, and that step refuses such a shard."""
    snippet = card_snippet()
    lines = snippet.splitlines()
    verify = verify_before_read(snippet)
    step = "\n".join(line for line in lines[: verify + 1] if "load_dataset(" not in line)  # no Hub call offline
    copy = copy_of(store, tmp_path).zoo_dir
    monkeypatch.chdir(copy)  # the snippet runs in a local copy of the repo
    exec(step, {})  # an intact copy passes
    lose_chunks(copy, "mp")
    with pytest.raises(StoreError, match="lacks chunks of its masks"):
        exec(step, {})


def test_a_build_refuses_a_staging_link_to_a_missing_folder_in_one_line(store, tmp_path):
    """A dangling link is listed as a file, not a folder: it once passed the check and the build
    then stumbled on it with FileExistsError."""
    zoo_dir = copy_of(store, tmp_path).zoo_dir
    shutil.rmtree(zoo_dir / "_staging", ignore_errors=True)
    (zoo_dir / "_staging").symlink_to(tmp_path / "gone", target_is_directory=True)
    with pytest.raises(StoreError, match=r"_staging is a link to .*gone, which does not exist"):
        StoreWriter.open(tmp_path, store.spec, layout_for(store.spec), resume=True)
    assert not (tmp_path / "gone").exists()
