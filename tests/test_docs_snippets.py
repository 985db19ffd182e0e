"""The docs say what the tools do: every name they import from zoo_twins exists, the analysis
commands write where docs/analysis.md says, and the worked example of docs/loading.md runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from _analysis_store import synthetic_store
from _fixtures_loader import shared_loader_store
from click.testing import CliRunner

import zoo_twins

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "dataset_cards" / "template.md"]


def _imports(text: str, module: str) -> list[str]:
    """Names of every ``from <module> import a, b`` / ``from <module> import (a,\\n b)`` in ``text``."""
    names = []
    for match in re.finditer(rf"from {re.escape(module)} import (\([^)]*\)|[^\n#`]*)", text):
        names += [n.strip() for n in match.group(1).strip("()").split(",") if n.strip()]
    return names


def test_every_name_the_docs_import_from_zoo_twins_exists():
    seen = set()
    for doc in DOCS:
        text = doc.read_text()
        for name in _imports(text, "zoo_twins"):
            assert hasattr(zoo_twins, name), f"{doc.name} imports {name} from zoo_twins, which lacks it"
            seen.add(name)
        for name in _imports(text, "zoo_twins.transforms"):
            assert hasattr(zoo_twins.transforms, name), f"{doc.name}: zoo_twins.transforms lacks {name}"
    assert {"ZooTwinDataset", "collate_shared", "LayerStandardization", "model_folds"} <= seen
    assert set(zoo_twins.__all__) <= set(dir(zoo_twins)) | {"download_zoo"}


def _doc_command(tool: str, sub: str = "") -> tuple[list[str], str | None]:
    """The first ``tool [sub] --zoo digits_seed --root stores ...`` line of docs/analysis.md, without
    its optional ``[...]`` parts, and the path its comment says the command writes (if any)."""
    for line in (REPO / "docs" / "analysis.md").read_text().splitlines():
        if line.startswith(f"{tool} {sub}".strip() + " ") and "--root stores" in line:
            command, _, comment = line.partition("#")
            written = re.search(r"(?:into|writes) (\./\S+?)/?$", comment.strip())
            return shlex.split(re.sub(r"\[[^\]]*\]", "", command))[1:], written and written.group(1)
    raise AssertionError(f"docs/analysis.md shows no `{tool} {sub} --root stores` command")


@pytest.fixture
def in_project(tmp_path, monkeypatch):
    """A working directory holding ./stores/digits_seed (synthetic: 6 models, every population)."""
    synthetic_store(tmp_path / "stores", n_models=6, original_epochs=2, mp_epochs=1, vd_epochs=2)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_analysis_commands_write_where_the_docs_say(in_project):
    from analysis.cli import main as report
    from analysis.hyperrep.cli import main as hyperrep

    args, written = _doc_command("zoo-report")
    assert written == "./digits_seed-report"
    result = CliRunner().invoke(report, args)
    assert result.exit_code == 0, result.output
    assert (in_project / written / "report.md").is_file()

    args, written = _doc_command("zoo-hyperrep", "train")
    assert written == "./digits_seed-hyperrep.pt"
    result = CliRunner().invoke(hyperrep, [*args, "--epochs", "1"])  # the path, not the training, is tested
    assert result.exit_code == 0, result.output
    assert (in_project / written).is_file()

    eval_line = next(line for line in (REPO / "docs" / "analysis.md").read_text().splitlines()
                     if line.startswith("zoo-hyperrep eval"))
    checkpoint = re.search(r"--checkpoint (\S+?)\]", eval_line).group(1)
    assert (in_project / checkpoint).resolve() == (in_project / written).resolve()
    for args in (_doc_command("zoo-hyperrep", "eval")[0], [*_doc_command("zoo-hyperrep", "eval")[0],
                                                           "--checkpoint", checkpoint]):
        result = CliRunner().invoke(hyperrep, args)
        assert result.exit_code == 0, result.output
        assert "reconstruction R^2" in result.output


def test_the_card_says_how_to_install_from_source():
    card = (REPO / "dataset_cards" / "template.md").read_text()
    assert "pip install zoo-twins" not in card  # no index serves it yet
    assert "not on PyPI yet" in card and "pip install ." in card


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return shared_loader_store(tmp_path_factory)


def test_the_worked_example_of_the_loading_doc_runs(zoo, tmp_path):
    """The k-fold script of docs/loading.md, as written, on the small built store (2 training epochs)."""
    import subprocess
    import sys

    text = (REPO / "docs" / "loading.md").read_text()
    section = text[text.index("### A worked example"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("\n```\n")]
    setting = 'ZOO, ROOT, EPOCHS = "digits_seed", "stores", 40'
    assert setting in code
    script = tmp_path / "example.py"
    script.write_text(code.replace(setting, f'ZOO, ROOT, EPOCHS = "digits_seed", {str(zoo.parent)!r}, 2'))
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    folds = re.search(r"R\^2 (\S+) \(folds: (.*)\)", line)
    assert folds, line
    scores = [float(s) for s in folds.group(2).split(", ")]
    assert len(scores) == 3  # the small store's 3 models: one held out per fold
    assert all(s == s and abs(s) < 1e6 for s in scores)  # finite numbers, each fold really scored
