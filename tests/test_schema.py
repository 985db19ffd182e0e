"""Store schema 1 stores still open, and migrate to schema 2 losslessly (schema 2 itself: test_hub_native)."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from _fixtures_loader import shared_loader_store
from click.testing import CliRunner

from builders import cli
from loaders import ZooTwinDataset
from zoo_dataset.errors import ChecksumError, StoreError
from zoo_dataset.store import StoreWriter, ZooStore
from zoo_dataset.store.files import sha256_file
from zoo_dataset.store.migrate import migrate_store


@pytest.fixture
def zoo(tmp_path_factory, tmp_path):
    copy = tmp_path / "stores" / "digits_seed"
    shutil.copytree(shared_loader_store(tmp_path_factory), copy)
    return copy


def as_schema_1(zoo_dir):
    """Rewrite a store the way schema 1 wrote it: ``level`` as [levels], version 1 everywhere."""
    manifest = json.loads((zoo_dir / "manifest.json").read_text())
    for info in manifest["populations"].values():
        for shard in info["shards"]:
            path = zoo_dir / shard["file"]
            with h5py.File(path, "r+") as f:
                del f["level"]
                f["level"] = np.asarray(info["levels"], dtype=np.float64)
                f.attrs["schema_version"] = 1
            shard["sha256"], shard["bytes"] = sha256_file(path), path.stat().st_size
    manifest["schema_version"] = 1
    (zoo_dir / "manifest.json").write_text(json.dumps(manifest))


def all_arrays(store):
    return {
        (p, m, lv, name): store.array(name, p, m, slice(None), lv)
        for p in store.populations
        for m in store.manifest.model_ids
        for lv in store.population(p).levels
        for name in store.population(p).arrays
    }


def test_a_schema_1_store_opens_and_migrates_losslessly(zoo):
    before = all_arrays(ZooStore(zoo))
    states = ZooStore(zoo).states()
    as_schema_1(zoo)
    old = ZooStore(zoo)
    assert old.manifest.schema_version == 1
    after_v1 = all_arrays(old)
    assert before.keys() == after_v1.keys()
    assert all(np.array_equal(before[k], after_v1[k]) for k in before)
    assert len(ZooTwinDataset(zoo, method="mp", split=None)) > 0
    with pytest.raises(StoreError, match="zoo-build --migrate"):
        StoreWriter.open(zoo.parent, old.spec, old.layout, resume=True)

    result = CliRunner().invoke(cli.main, ["--migrate", "--zoo", "digits_seed", "--out", str(zoo.parent), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "store schema 2" in result.output
    new = ZooStore(zoo)
    new.verify()
    assert new.manifest.schema_version == 2
    migrated = all_arrays(new)
    assert all(np.array_equal(before[k], migrated[k]) and before[k].dtype == migrated[k].dtype for k in before)
    assert new.states().equals(states)
    for population in new.populations:
        for shard in new.population(population).shards:
            with h5py.File(zoo / shard.file, "r") as f:
                assert f.attrs["schema_version"] == 2
                assert all(f[k].shape[0] == shard.rows for k in f)
                assert f["weights"].compression == "gzip" and f["weights"].chunks[:3] == (1, 1, 1)
    assert migrate_store(zoo) == 0  # a second run finds nothing to do


def test_migration_refuses_a_damaged_shard(zoo):
    as_schema_1(zoo)
    shard = zoo / ZooStore(zoo).population("vd").shards[0].file
    with h5py.File(shard, "r+") as f:
        f["weights"][0, 0, 0, :3] = 7.0
    with pytest.raises(ChecksumError, match="not migrated"):
        migrate_store(zoo)


def test_migrate_never_checksums_a_damaged_schema_2_shard_into_the_manifest(zoo):
    """A store already at schema 2 with a damaged shard: migrate once re-hashed it into the manifest."""
    shard = zoo / ZooStore(zoo).population("vd").shards[0].file
    with h5py.File(shard, "r+") as f:
        f["weights"][0, 0, 0, :3] = 7.0
    with pytest.raises(ChecksumError, match="neither the manifest's shard nor the one a migration wrote"):
        migrate_store(zoo)
    with pytest.raises(ChecksumError):
        ZooStore(zoo).verify()  # the manifest still names the undamaged shard


def test_a_migration_killed_between_a_shard_and_the_manifest_is_finished_by_a_rerun(zoo, monkeypatch):
    """Killed after a shard was replaced but before the manifest named it: the pending record vouches for it."""
    from zoo_dataset.store import migrate

    before = all_arrays(ZooStore(zoo))
    as_schema_1(zoo)
    saves = {"n": 0}
    real_save = migrate.Manifest.save

    def killed_after_first_shard(self, zoo_dir):
        saves["n"] += 1
        raise KeyboardInterrupt  # the process dies before the manifest names the rewritten shard

    monkeypatch.setattr(migrate.Manifest, "save", killed_after_first_shard)
    with pytest.raises(KeyboardInterrupt):
        migrate_store(zoo)
    monkeypatch.setattr(migrate.Manifest, "save", real_save)
    assert saves["n"] == 1 and (zoo / migrate.PENDING).exists()
    migrate_store(zoo)
    new = ZooStore(zoo)
    new.verify()
    assert new.manifest.schema_version == 2 and not (zoo / migrate.PENDING).exists()
    after = all_arrays(new)
    assert all(np.array_equal(before[k], after[k]) for k in before)
