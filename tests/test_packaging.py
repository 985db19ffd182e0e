"""The built wheel carries the data files the tools read at run time (not only the editable tree)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_zoo_specs_and_card_template(tmp_path):
    pytest.importorskip("setuptools")
    source = tmp_path / "source"  # a copy, so setuptools' build/ stays out of the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "stores", "*.egg-info",
                                                                "__pycache__", ".*_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(source)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("zoo_twins-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "zoo_dataset/zoos.toml" in names
    assert "dataset_cards/template.md" in names
    assert "builders/stages/card.py" in names
