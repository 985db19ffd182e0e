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


def test_the_statistics_baseline_is_public_beside_a_users_own_analysis_package(tmp_path):
    project = tmp_path / "research"
    for package in ("analysis", "loaders"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text("MINE = True\n")
    code = (
        "import analysis, torch\n"
        "from zoo_twins import WeightStatisticsBaseline, weight_statistics\n"
        "from zoo_dataset.architectures import build_model\n"
        "from zoo_dataset.layout import ParameterLayout\n"
        "layout = ParameterLayout.from_module(build_model('cnn_s', 1, 'tanh'))\n"
        "generator = torch.Generator().manual_seed(0)\n"
        "scale = 0.5 + 1.5 * torch.rand(40, 1, generator=generator)\n"
        "x = torch.randn(40, layout.num_params, generator=generator) * scale\n"
        "y = x.std(1).numpy()  # a property the statistics determine\n"
        "baseline = WeightStatisticsBaseline(layout).fit(x[:30], {'spread': y[:30]})\n"
        "r2 = baseline.score(x[30:], {'spread': y[30:]})['spread']\n"
        "print(analysis.MINE, weight_statistics(x, layout).shape, baseline.predict(x[30:])['spread'].shape, r2 > 0.5)\n"
    )
    out = run_in(project, code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "(40,", "80)", "(10,)", "True"]  # 5 layers x (weights, biases) x 8
