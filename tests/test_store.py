"""The store: atomic staging and packing, manifest checksums, clear errors on damage."""

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

from zoo_dataset.counter_rng import GENERATOR
from zoo_dataset.errors import ChecksumError, StoreError
from zoo_dataset.specs import get_spec
from zoo_dataset.store import StoreWriter, ZooStore
from zoo_dataset.store.layout_on_disk import unit_path
from zoo_dataset.store.reader import _read_unit as read_unit
from zoo_dataset.training import JobResult, UnitKey


def test_store_tables_and_manifest(original_store, small_spec):
    store = original_store
    models = store.models()
    assert list(models.model_id) == [0, 1, 2, 3]
    assert set(models.split) <= {"train", "val", "test"}
    states = store.states("original")
    assert len(states) == 4 * (small_spec.epochs + 1)
    assert {"test_acc", "train_acc", "ggap", "sparsity", "sparsity_fc1", "agreement"} <= set(states.columns)
    np.testing.assert_allclose(states.ggap, states.train_acc - states.test_acc)
    info = store.population("original")
    assert info.status == "complete" and sum(s.rows for s in info.shards) == 4
    manifest = json.loads((store.zoo_dir / "manifest.json").read_text())
    assert manifest["schema_version"] == 2 and manifest["spec"]["name"] == "digits_seed"
    assert not (store.zoo_dir / "_staging").exists()  # packed units and their folders are cleaned up
    store.verify()


def test_shard_arrays_are_chunked_and_compressed(original_store):
    shard = original_store.population("original").shards[0]
    with h5py.File(original_store.zoo_dir / shard.file) as f:
        ds = f["weights"]
        assert ds.shape[:3] == (4, 1, 3) and ds.chunks[:3] == (1, 1, 1) and ds.compression == "gzip"


def copy_store(store, tmp_path):
    target = tmp_path / store.zoo_dir.name
    shutil.copytree(store.zoo_dir, target)
    return target


def test_checksum_mismatch_is_detected(original_store, tmp_path):
    zoo_dir = copy_store(original_store, tmp_path)
    shard = zoo_dir / ZooStore(zoo_dir).population("original").shards[0].file
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        ZooStore(zoo_dir).verify()


def test_truncated_shard_gives_a_clear_error(original_store, tmp_path):
    zoo_dir = copy_store(original_store, tmp_path)
    shard = zoo_dir / ZooStore(zoo_dir).population("original").shards[0].file
    shard.write_bytes(shard.read_bytes()[:2000])
    with pytest.raises(StoreError, match="corrupt or truncated"):
        ZooStore(zoo_dir).weights("original", 0)


def test_missing_or_corrupt_manifest(tmp_path):
    with pytest.raises(StoreError, match="manifest.json is missing"):
        ZooStore(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="corrupt"):
        ZooStore(tmp_path)


def test_epoch_and_population_errors(original_store):
    with pytest.raises(StoreError, match="epoch 9 out of range"):
        original_store.weights("original", 0, epoch=9)
    with pytest.raises(StoreError, match="population 'vd' is not in"):
        original_store.weights("vd", 0)


def fake_result(model_id, n_params, epochs=1):
    rng = np.random.default_rng(model_id)
    metrics = [{"epoch": e, "test_acc": 0.5, "train_acc": 0.6, "ggap": 0.1} for e in range(epochs + 1)]
    return JobResult(UnitKey(model_id), rng.standard_normal((epochs + 1, n_params)).astype(np.float32), metrics)


def test_staged_units_survive_and_shards_appear_only_when_complete(tmp_path, small_spec):
    from zoo_dataset.model_layout import layout_for

    layout = layout_for(small_spec)
    spec = small_spec.with_overrides(models_per_shard=2)
    writer = StoreWriter.open(tmp_path, spec, layout, resume=False)
    pop = writer.population("original", [0.0], epochs=1, arrays=["weights"], generator=GENERATOR)
    pop.stage(fake_result(0, layout.num_params))
    assert unit_path(writer.zoo_dir, "original", 0, 0.0).exists()
    assert not (writer.zoo_dir / "original").exists()  # no half shard
    pop.stage(fake_result(1, layout.num_params))
    assert [s.model_ids for s in pop.info.shards] == [[0, 1]]
    assert not unit_path(writer.zoo_dir, "original", 0, 0.0).exists()
    # a second process resuming sees shard 0 done and the staged unit of model 2
    pop.stage(fake_result(2, layout.num_params))
    reopened = StoreWriter.open(tmp_path, spec, layout, resume=True)
    again = reopened.population("original", [0.0], 1, ["weights"], GENERATOR)
    assert again.is_done(UnitKey(0)) and again.is_done(UnitKey(2)) and not again.is_done(UnitKey(3))
    again.stage(fake_result(3, layout.num_params))
    store = ZooStore(writer.zoo_dir)
    np.testing.assert_array_equal(store.weights("original", 3, epoch=0), fake_result(3, layout.num_params).weights[0])
    assert store.population("original").status == "complete"
    assert isinstance(store.states("original"), pd.DataFrame) and len(store.states()) == 8


def test_staging_a_unit_looks_at_its_own_shard_only(tmp_path, small_spec, monkeypatch):
    """Staging scanned every unpacked shard's units and is_done rebuilt the set of packed models on
    every call: a 30 000-model ingest or build was quadratic (~1 s per model at 30 000)."""
    from zoo_dataset.model_layout import layout_for
    from zoo_dataset.store import writer as store_writer

    layout = layout_for(small_spec)
    spec = get_spec("digits_256").with_overrides(models_per_shard=2, epochs=1)
    writer = StoreWriter.open(tmp_path, spec, layout, resume=False)
    pop = writer.population("original", [0.0], epochs=1, arrays=["weights"], generator=GENERATOR)
    pop.stage(fake_result(0, layout.num_params))
    pop.stage(fake_result(1, layout.num_params))  # shard 0 packed
    looked = []
    monkeypatch.setattr(store_writer, "unit_path", lambda *args: looked.append(args[2]) or unit_path(*args))
    pop.stage(fake_result(200, layout.num_params))
    assert set(looked) == {200, 201}  # its shard's units, not the 127 other shards'

    class Counted(list):
        iterations = 0

        def __iter__(self):
            Counted.iterations += 1
            return super().__iter__()

    pop.info.shards = Counted(pop.info.shards)
    pop._packed = None
    assert [pop.is_done(UnitKey(m)) for m in range(4)] == [True, True, False, False]
    assert Counted.iterations == 1


def test_existing_store_needs_resume_and_matching_spec(original_store, small_spec):
    from zoo_dataset.model_layout import layout_for

    root = original_store.zoo_dir.parent
    writer = StoreWriter.open(root, small_spec, layout_for(small_spec), resume=False)
    with pytest.raises(StoreError, match="pass --resume"):
        writer.population("original", [0.0], small_spec.epochs, ["weights"], GENERATOR)
    with pytest.raises(StoreError, match="build its original population first"):
        StoreWriter.open(root / "elsewhere", small_spec, layout_for(small_spec), resume=False, create=False)
    with pytest.raises(StoreError, match="different settings"):
        StoreWriter.open(root, small_spec.with_overrides(epochs=5), layout_for(small_spec), resume=True)


def test_stale_tmp_files_are_removed_on_resume(original_store, tmp_path, small_spec):
    from zoo_dataset.model_layout import layout_for

    zoo_dir = copy_store(original_store, tmp_path)
    stale = zoo_dir / "_staging" / "original" / "m000001-l0.0000.h5.123.tmp"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half")
    StoreWriter.open(tmp_path, small_spec, layout_for(small_spec), resume=True)
    assert not stale.exists()


@pytest.mark.parametrize("dtype", [np.bool_, np.float32])
def test_read_unit_equals_h5py_indexing(tmp_path, dtype):
    """The fast boolean path reads exactly what h5py's own indexing reads, for every epoch form."""
    rng = np.random.default_rng(0)
    values = rng.random((3, 2, 6, 17)) > 0.5 if dtype is np.bool_ else rng.random((3, 2, 6, 17), dtype=np.float32)
    with h5py.File(tmp_path / "unit.h5", "w") as f:
        ds = f.create_dataset("a", data=values, chunks=(1, 1, 1, 17), compression="gzip", shuffle=True)
        for epoch in (0, 5, -1, -6, slice(None), slice(1, 5), slice(0, 6, 2), slice(3, 3)):
            got = read_unit(ds, 2, 1, epoch)
            assert got.dtype == values.dtype
            np.testing.assert_array_equal(got, ds[2, 1, epoch])
