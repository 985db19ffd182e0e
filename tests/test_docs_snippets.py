"""The docs say what the tools do: every name they import from zoo_twins exists, the analysis
commands write where docs/analysis.md says, and the worked example of docs/loading.md runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
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
        for name in _imports(text, "zoo_twins") + re.findall(r"\bzoo_twins\.(\w+)", text):
            assert hasattr(zoo_twins, name), f"{doc.name} names {name} from zoo_twins, which lacks it"
            seen.add(name)
        for name in _imports(text, "zoo_twins.transforms"):
            assert hasattr(zoo_twins.transforms, name), f"{doc.name}: zoo_twins.transforms lacks {name}"
    assert {"ZooTwinDataset", "collate_shared", "LayerStandardization", "model_folds", "permute",
            "gaussian_noise", "erase_neurons", "NeuronErasing", "WEIGHT_KEYS", "STATE_KEYS",
            "to_hf_dataset"} <= seen


def test_the_loading_doc_tables_name_what_zoo_twins_exports():
    """The transforms and plain functions tables of docs/loading.md say they are importable from
    zoo_twins: every callable their first column names is."""
    text = (REPO / "docs" / "loading.md").read_text()
    section = text[text.index("### Augmentations and standardisation"):text.index("### Splits, filters and folds")]
    named = {name for row in re.findall(r"^\| ([^|]+) \|", section, flags=re.M)
             for name in re.findall(r"`(\w+)\(", row)}
    assert {"RandomNeuronPermutation", "permute", "NeuronErasing", "erase_neurons", "pruned_zeros"} <= named
    assert not {name for name in named if not hasattr(zoo_twins, name)}


def test_all_is_the_public_surface_and_star_import_resolves_it():
    import loaders

    facade = {"ZooSpec", "ZooStore", "get_spec", "load_specs", "methods", "download_zoo",
              "WeightStatisticsBaseline", "weight_statistics"}  # the core's names, and those loaded on use
    assert set(zoo_twins.__all__) == set(loaders.__all__) | facade
    assert len(zoo_twins.__all__) == len(set(zoo_twins.__all__))
    scope: dict = {}
    exec("from zoo_twins import *", scope)  # resolves every name of __all__, those loaded on use too
    assert set(zoo_twins.__all__) <= set(scope)
    assert scope["WeightStatisticsBaseline"].__name__ == "WeightStatisticsBaseline"


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


def run_worked_example(heading: str, setting: str, replacement: str, tmp_path) -> str:
    """The first python block after ``heading`` in docs/loading.md, run as a script with its
    ``setting`` line replaced; its last line of output."""
    text = (REPO / "docs" / "loading.md").read_text()
    section = text[text.index(heading):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("\n```\n")]
    assert setting in code
    script = tmp_path / "example.py"
    script.write_text(code.replace(setting, replacement))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_the_worked_example_of_the_loading_doc_runs(zoo, tmp_path):
    """The k-fold script of docs/loading.md, as written, on the small built store (2 training epochs)."""
    line = run_worked_example("### A worked example", WORKED_EXAMPLE,
                              f'ZOO, ROOT, EPOCHS = "digits_seed", {str(zoo.parent)!r}, 2', tmp_path)
    folds = re.search(r"R\^2 (\S+) \(folds: (.*)\)", line)
    assert folds, line
    scores = [float(s) for s in folds.group(2).split(", ")]
    assert len(scores) == 3  # the small store's 3 models: one held out per fold
    assert all(s == s and abs(s) < 1e6 for s in scores)  # finite numbers, each fold really scored


def test_the_nfn_example_of_the_loading_doc_runs(zoo, tmp_path):
    """The NFN script of docs/loading.md (the nfn package, a DataLoader with workers), as written, on
    the small built store with one training epoch."""
    pytest.importorskip("nfn")
    line = run_worked_example("### A worked example: test accuracy from weights with a neural functional",
                              NFN_EXAMPLE, f'ZOO, ROOT, EPOCHS = "digits_seed", {str(zoo.parent)!r}, 1', tmp_path)
    scores = re.search(r"of (\d+) held-out models \((\d+) states\): R\^2 (\S+), Kendall tau (\S+)$", line)
    assert scores, line
    assert (int(scores.group(1)), int(scores.group(2))) == (1, 2)  # the small store's test model, 2 states
    assert all(abs(float(s)) < 1e6 for s in scores.group(3, 4))  # finite numbers (NaN fails the comparison)


# ---------------------------------------------------------------------------- every python snippet runs
WORKED_EXAMPLE = 'ZOO, ROOT, EPOCHS = "digits_seed", "stores", 100'  # run above, with 2 epochs
NFN_EXAMPLE = 'ZOO, ROOT, EPOCHS = "digits_random_256", "stores", 20'  # run above, with 1 epoch
SNIPPET = re.compile(r"(?:<!-- not run in the tests: (?P<reason>[^\n]*?) -->\n)?```python\n(?P<code>.*?)\n```", re.S)
SNIPPET_DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNER = """
import json, sys, traceback
failures = []
for where, code in json.load(open(sys.argv[1])):
    try:
        exec(compile(code, where, "exec"), {"__name__": "__main__"})
    except BaseException:
        failures.append(where + ": " + traceback.format_exc(limit=-3))
print(json.dumps(failures))
"""


def python_snippets() -> list[tuple[str, str, str | None]]:
    """(doc:line, code, why it is not run or None) of every python block of README.md and docs/."""
    out = []
    for doc in SNIPPET_DOCS:
        text = doc.read_text()
        for match in SNIPPET.finditer(text):
            line = text.count("\n", 0, match.start("code")) + 1
            out.append((f"{doc.relative_to(REPO)}:{line}", match["code"], match["reason"]))
    return out


def test_a_python_snippet_that_is_not_run_says_why():
    snippets = python_snippets()
    assert len(snippets) >= 10
    for where, _, reason in snippets:
        assert reason is None or len(reason.split()) >= 3, f"{where}: say why it is not run"


def test_every_python_snippet_of_the_docs_runs(tmp_path):
    """Each block as written, offline, in one interpreter, in a project folder holding synthetic
    stores of the zoos the docs name: ./stores/digits_seed (6 models, MP levels 0.5, 0.7 and 0.9,
    6 VD epochs: the docs read model 3 at 70 % and VD epoch 5) and ./stores/digits_random (16)."""
    project = tmp_path / "project"
    synthetic_store(project / "stores", n_models=6, original_epochs=2, mp_epochs=1, vd_epochs=6)
    synthetic_store(project / "stores", n_models=16, original_epochs=2, mp_epochs=1, vd_epochs=2, zoo="digits_random")
    runnable = [(where, code) for where, code, reason in python_snippets()
                if reason is None and WORKED_EXAMPLE not in code]
    assert len(runnable) >= 8
    (tmp_path / "snippets.json").write_text(json.dumps(runnable))
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ZOO_TWINS_CACHE": str(tmp_path / "cache"),
           "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets")}
    out = subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "snippets.json")],
                         capture_output=True, text=True, env=env, cwd=project)
    assert out.returncode == 0, out.stderr[-3000:]
    failures = json.loads(out.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(failures)
