"""The NFN worked example of docs/loading.md runs as written (the nfn package, a DataLoader with
workers) on the small built store, with one training epoch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _fixtures_loader import shared_loader_store

REPO = Path(__file__).resolve().parent.parent
SECTION = "### A worked example: test accuracy from weights with a neural functional"


def test_the_nfn_example_of_the_loading_doc_runs(tmp_path_factory, tmp_path):
    pytest.importorskip("nfn")
    zoo = shared_loader_store(tmp_path_factory)
    text = (REPO / "docs" / "loading.md").read_text()
    section = text[text.index(SECTION):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("\n```\n")]
    setting = 'ZOO, ROOT, EPOCHS = "digits_random_256", "stores", 20'
    assert setting in code
    script = tmp_path / "example.py"
    script.write_text(code.replace(setting, f'ZOO, ROOT, EPOCHS = "digits_seed", {str(zoo.parent)!r}, 1'))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    scores = re.search(r"of (\d+) held-out models \((\d+) states\): R\^2 (\S+), Kendall tau (\S+)$", line)
    assert scores, line
    assert (int(scores.group(1)), int(scores.group(2))) == (1, 2)  # the small store's test model, 2 states
    assert all(abs(float(s)) < 1e6 for s in scores.group(3, 4))  # finite numbers (NaN fails the comparison)
