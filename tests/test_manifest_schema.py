"""The manifest's own schema: every key a schema version requires is required, and every value has
its type (a JSON ``true`` is no number, ``"bogus"`` no status). Refusals are one line."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from _fixtures_loader import shared_loader_store
from click.testing import CliRunner

from analysis import cli as report_cli
from zoo_dataset.errors import StoreError
from zoo_dataset.store import ZooStore
from zoo_dataset.store.migrate import migrate_store

ZOO = "digits_seed"


@pytest.fixture
def zoo(tmp_path_factory, tmp_path):
    copy = tmp_path / ZOO
    shutil.copytree(shared_loader_store(tmp_path_factory), copy)
    return copy


def edit_manifest(zoo_dir, change) -> None:
    path = zoo_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def first_shard(manifest):
    return manifest["populations"]["original"]["shards"][0]


def reverse_splits(zoo_dir) -> None:
    table = pd.read_parquet(zoo_dir / "models.parquet")
    table["split"] = table.split.to_numpy()[::-1]
    table.to_parquet(zoo_dir / "models.parquet", index=False)


def test_deleting_models_sha256_does_not_turn_the_models_table_check_off(zoo):
    """Without the key, a reversed split column was served as the store's."""
    reverse_splits(zoo)
    edit_manifest(zoo, lambda m: m.pop("models_sha256"))
    with pytest.raises(StoreError, match=r"lacks models_sha256, which schema 2 requires"):
        ZooStore(zoo)
    result = CliRunner().invoke(report_cli.main, ["--zoo", str(zoo), "--out", str(zoo.parent / "report")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "lacks models_sha256" in result.output


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.update(models_sha256=None), "models_sha256 is null"),
    (lambda m: m.pop("train_chunk"), "lacks train_chunk"),
    (lambda m: m.pop("origin"), "lacks origin"),  # its absence would turn the downloaded-shard hashing off
    (lambda m: first_shard(m).pop("states_bytes"), r"shards\[0\] lacks states_bytes"),
    (lambda m: first_shard(m).update(states_bytes=None), "states_bytes is null"),
    (lambda m: m["populations"]["mp"].pop("generator"), "lacks generator"),
])
def test_a_key_schema_2_requires_may_not_be_missing_or_null(zoo, change, message):
    edit_manifest(zoo, change)
    with pytest.raises(StoreError, match=message) as error:
        ZooStore(zoo)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["populations"]["mp"].update(status="bogus"), r'status is "bogus", not "partial" or "complete"'),
    (lambda m: m.update(schema_version=True), "schema version true"),
    (lambda m: m.update(schema_version=2.0), "schema version 2.0"),
    (lambda m: m["model_ids"].__setitem__(0, True), r"model_ids\[0\] is true, not int"),
    (lambda m: first_shard(m)["model_ids"].__setitem__(0, True), r"model_ids\[0\] is true, not int"),
    (lambda m: m.update(models_per_shard="4"), 'models_per_shard is "4", not int'),
    (lambda m: m["populations"]["original"].update(epochs=1.0), "epochs is 1.0, not int"),
    (lambda m: m["populations"]["mp"].update(levels=[True, 0.9]), r"levels\[0\] is true, not float"),
    (lambda m: m["populations"]["original"].update(epochs=-1), "epochs must be >= 0"),
    (lambda m: first_shard(m).update(bytes=-5), "negative index or size"),
    (lambda m: m.update(model_ids=[0, 0, 4]), "distinct non-negative ids"),
    (lambda m: first_shard(m).update(sha256="Z" * 64), "no valid sha256"),
    (lambda m: m.update(surprise=1), r"unknown key\(s\) surprise"),
])
def test_nonsense_in_the_manifest_is_refused_in_one_line(zoo, change, message):
    edit_manifest(zoo, change)
    with pytest.raises(StoreError, match=message) as error:
        ZooStore(zoo)
    assert "\n" not in str(error.value)


def as_early_schema_2(zoo_dir) -> None:
    """The manifest as the first schema-2 toolkits wrote it: no models table sha256, training chunk,
    states table sizes, origin or generators."""
    def change(manifest):
        for key in ("models_sha256", "train_chunk", "origin"):
            manifest.pop(key)
        for info in manifest["populations"].values():
            info.pop("generator")
            for shard in info["shards"]:
                shard.pop("states_bytes")

    edit_manifest(zoo_dir, change)


def test_a_manifest_of_an_early_toolkit_is_refused_then_completed_by_migrate(zoo):
    before = json.loads((zoo / "manifest.json").read_text())
    as_early_schema_2(zoo)
    with pytest.raises(StoreError, match="zoo-build --migrate"):
        ZooStore(zoo)
    assert migrate_store(zoo) == 0  # no shard rewritten: only the keys are recorded
    after = json.loads((zoo / "manifest.json").read_text())
    assert after["models_sha256"] == before["models_sha256"] and after["train_chunk"] == before["models_per_shard"]
    assert [s["states_bytes"] for p in after["populations"].values() for s in p["shards"]] == [
        s["states_bytes"] for p in before["populations"].values() for s in p["shards"]]
    ZooStore(zoo).verify()


def test_migrate_never_vouches_for_a_models_table_that_lacks_models(zoo):
    as_early_schema_2(zoo)
    table = pd.read_parquet(zoo / "models.parquet")
    table.iloc[1:].to_parquet(zoo / "models.parquet", index=False)
    with pytest.raises(StoreError, match="does not list every model"):
        migrate_store(zoo)
    with pytest.raises(StoreError, match="lacks models_sha256"):
        ZooStore(zoo)
