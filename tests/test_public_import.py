"""``zoo_twins`` is the public import path, and a user's own ``loaders/`` folder cannot shadow it."""

from __future__ import annotations

import subprocess
import sys


def run_in(folder, code: str) -> subprocess.CompletedProcess:
    """``python -c code`` from ``folder``: its folders come first on sys.path, as in a user's project."""
    return subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True)


def test_zoo_twins_works_from_a_folder_with_its_own_loaders_package(tmp_path, original_store):
    project = tmp_path / "research"
    (project / "loaders").mkdir(parents=True)
    (project / "loaders" / "__init__.py").write_text("MINE = True\n")
    shadowed = run_in(project, "from loaders import ZooTwinDataset")
    assert shadowed.returncode != 0 and "ImportError" in shadowed.stderr  # the problem is real
    code = (
        "import loaders, zoo_twins\n"
        "from zoo_twins import ZooStore, ZooTwinDataset, ZooTrajectoryDataset, open_store, download_zoo\n"
        "assert loaders.MINE  # the user's package is left alone\n"
        f"store = open_store({str(original_store.zoo_dir)!r})\n"
        "print(type(store) is ZooStore, len(store.models()))\n"
        "try:\n"
        f"    ZooTwinDataset({str(original_store.zoo_dir)!r}, method='mp')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = run_in(project, code)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first == f"True {len(original_store.models())}"
    assert second.startswith("StoreError") and "holds no mp twins" in second


def test_zoo_twins_reuses_the_toolkit_loaders_when_they_are_not_shadowed(tmp_path):
    out = run_in(tmp_path, "import loaders, zoo_twins; print(zoo_twins.ZooTwinDataset is loaders.ZooTwinDataset)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
