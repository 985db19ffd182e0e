"""The top-level packages import in one direction: zoo_dataset <- releases <- loaders <- builders <- analysis.

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
    "analysis": {"zoo_dataset", "loaders", "builders", "zoo_twins"},  # builders: the card writer (zoo-bench)
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


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports() -> dict[str, set[str]]:
    """Every module of the project -> the project's modules it imports (any import statement,
    under ``if TYPE_CHECKING:`` and inside functions included; ``from .pkg import name`` counts
    ``pkg.name`` where that is a module)."""
    paths = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            found |= {t for t in targets if t in paths and t != name}
        graph[name] = found
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's cycles, one per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_cycle_finder_sees_a_cycle_through_type_checking_imports():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_through_others():
    """A cycle of modules (even one closed only by a type-checking or deferred import) means two
    modules that cannot be read, tested or moved apart; the engine and the method registry meet
    in ``zoo_dataset.population_hooks`` instead of importing each other."""
    assert import_cycles(module_imports()) == []
