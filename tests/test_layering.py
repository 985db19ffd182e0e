"""The top-level packages import in one direction: zoo_dataset <- releases <- loaders <- builders, analysis.

Every import statement of every module is read (module level and inside functions alike: a deferred
import is still a dependency), so a cycle cannot hide behind a late import.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo_dataset", "releases", "loaders", "builders", "analysis", "zoo_twins")
# what each package may import from the others (zoo_twins is the public facade over loaders)
ALLOWED = {
    "zoo_dataset": set(),
    "releases": {"zoo_dataset"},
    "loaders": {"zoo_dataset", "releases"},
    "builders": {"zoo_dataset", "releases", "loaders"},
    "analysis": {"zoo_dataset", "loaders", "zoo_twins"},
    "zoo_twins": {"zoo_dataset", "loaders", "analysis"},  # analysis: its statistics baseline, loaded on use
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """For each other top-level package ``package`` imports: the files that import it."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in PACKAGES and top != package:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_layers_below_it(package):
    wrong = {dep: files for dep, files in imported_packages(package).items() if dep not in ALLOWED[package]}
    assert not wrong, f"{package} imports {wrong}"


def test_the_allowed_imports_have_no_cycle():
    graph = {p: {d for d in imported_packages(p)} for p in PACKAGES}
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        assert state.get(node) != "open", f"import cycle: {' -> '.join(path + [node])}"
        if state.get(node) == "done":
            return
        state[node] = "open"
        for dep in graph[node]:
            visit(dep, path + [node])
        state[node] = "done"

    for package in PACKAGES:
        visit(package, [])
