"""The card stage and zoo-publish: a Hub dataset card computed from the store, a static mirror."""

from __future__ import annotations

import re
import shutil

import pytest
from _fixtures_loader import shared_loader_store
from click.testing import CliRunner
from huggingface_hub import DatasetCard

from builders import publish
from builders.stages import STAGES
from builders.stages.card import write_card
from zoo_dataset.store import ZooStore


@pytest.fixture
def store(tmp_path_factory, tmp_path):
    """A private copy of the shared store, so that writing its card touches nothing shared."""
    copy = tmp_path / "stores" / "digits_seed"
    shutil.copytree(shared_loader_store(tmp_path_factory), copy)
    return ZooStore(copy)


def test_card_stage_is_registered_last():
    assert list(STAGES)[-1] == "card"


def test_card_front_matter_and_statistics_come_from_the_store(store, tmp_path):
    path = write_card(store, copy_dir=tmp_path / "cards")
    card = DatasetCard.load(path)
    assert card.data.license and card.data.pretty_name
    configs = {c["config_name"]: c for c in card.data.configs}
    assert {"models", *(f"states_{p}" for p in store.populations), "pairs_mp", "pairs_vd"} == set(configs)
    states = store.states("vd")
    last = states[states.epoch == states.epoch.max()]
    row = next(line for line in card.text.splitlines() if line.startswith("| vd | - |"))
    assert f"{100 * last.test_acc.mean():.1f} ({100 * last.test_acc.std(ddof=0):.1f})" in row
    assert f"| {last.model_id.nunique()} | {len(states)} |" in row
    level_rows = [line for line in card.text.splitlines() if re.match(r"\| mp \| \d+% \|", line)]
    assert len(level_rows) == len(store.population("mp").levels)
    assert "$" not in card.text.replace("$ ", "")  # every placeholder filled
    assert (tmp_path / "cards" / "digits_seed" / "README.md").read_text() == path.read_text()


def test_zoo_publish_lays_out_a_verified_mirror(store, tmp_path):
    result = CliRunner().invoke(
        publish.main,
        ["--zoo", "digits_seed", "--root", str(store.zoo_dir.parent), "--mirror", str(tmp_path / "m")],
    )
    assert result.exit_code == 0, result.output
    mirrored = ZooStore(tmp_path / "m" / "digits_seed")
    mirrored.verify()
    assert (mirrored.zoo_dir / "README.md").exists()
    assert "digits_seed" in (tmp_path / "m" / "index.json").read_text()


def test_zoo_publish_uploads_the_listed_files_as_a_dataset_repo(store, monkeypatch):
    calls = {}

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls["create"] = (repo_id, kwargs)

        def upload_folder(self, **kwargs):
            calls["upload"] = kwargs
            return "https://example.invalid/commit"

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    write_card(store)
    publish.publish_hub(store, "org/digits-twins")
    assert calls["create"][1]["repo_type"] == calls["upload"]["repo_type"] == "dataset"
    files = calls["upload"]["allow_patterns"]
    assert files[-1] == "manifest.json" and {"README.md", "croissant.json"} <= set(files)
    assert "data/pairs_vd/validation-00000-of-00001.parquet" in files
    assert all((store.zoo_dir / f).exists() for f in files)


def test_zoo_publish_reports_an_unbuilt_zoo_in_one_line(tmp_path):
    result = CliRunner().invoke(
        publish.main, ["--zoo", "digits_seed", "--root", str(tmp_path), "--mirror", "x"]
    )
    assert result.exit_code == 1 and result.output.startswith("error: zoo 'digits_seed' is not at")
