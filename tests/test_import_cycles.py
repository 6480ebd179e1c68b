"""facetune's modules import one way: no module reaches itself through its imports.

Imports are read with `ast` (nothing is executed), including those inside functions and under
TYPE_CHECKING: a function-level import that closes a loop still couples the modules both ways.
Importing a submodule also runs its package's __init__; that implicit edge is left out, as
every package re-exporting its own submodules would otherwise be a loop.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "facetune"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the package `root`."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `module` (the file at `path`) imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import name` imports the submodule pkg.name when there is one.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` names the module; fall back to the nearest known parent package.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [m1, m2, ..., m1], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(step) == 1:
                return path[path.index(step):] + [step]
            elif not state.get(step):
                state[step] = 1
                path.append(step)
                stack.append(iter(sorted(graph[step])))
    return None


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def test_facetune_has_no_import_cycle():
    cycle = find_cycle(import_graph(PACKAGE_ROOT))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def package_graph(graph: dict[str, set[str]], top: str) -> dict[str, set[str]]:
    """The module graph folded to `top`'s direct children: each subpackage and each top-level
    module is one node, and an import between two of them an edge."""

    def unit(module: str) -> str:
        return ".".join(module.split(".")[:2]) if module != top else module

    folded: dict[str, set[str]] = {}
    for module, targets in graph.items():
        folded.setdefault(unit(module), set()).update(unit(t) for t in targets if unit(t) != unit(module))
    return folded


def test_facetune_packages_import_one_way():
    cycle = find_cycle(package_graph(import_graph(PACKAGE_ROOT), "facetune"))
    assert cycle is None, "package-level import cycle: " + " -> ".join(cycle)


def test_a_loop_between_two_packages_is_a_package_cycle_even_without_a_module_cycle():
    graph = {"pkg.a.one": {"pkg.b.two"}, "pkg.b.three": {"pkg.a.four"}, "pkg.a.four": set(), "pkg.b.two": set()}
    assert find_cycle(graph) is None
    assert find_cycle(package_graph(graph, "pkg")) in (["pkg.a", "pkg.b", "pkg.a"], ["pkg.b", "pkg.a", "pkg.b"])


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "pkg"


def test_a_function_level_import_that_closes_a_loop_is_a_cycle(tmp_path):
    package = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import thing\n",
        "pkg/b.py": "def thing():\n    from pkg import a\n    return a\n",
    })
    assert find_cycle(import_graph(package)) == ["pkg.a", "pkg.b", "pkg.a"]


def test_relative_imports_and_one_way_chains_are_no_cycle(tmp_path):
    package = write_package(tmp_path, {
        "pkg/__init__.py": "from pkg.sub.c import C\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from ..d import D\nfrom . import e\nC = D\n",
        "pkg/d.py": "import os\nD = 1\n",
        "pkg/sub/e.py": "import pkg.d\n",
    })
    graph = import_graph(package)
    assert graph["pkg.sub.c"] == {"pkg.d", "pkg.sub.e"}
    assert graph["pkg.sub.e"] == {"pkg.d"}
    assert find_cycle(graph) is None


@pytest.mark.parametrize("cycle_length", [1, 3])
def test_find_cycle_returns_the_loop_closed_on_its_first_module(cycle_length):
    names = [f"m{i}" for i in range(cycle_length)]
    graph = {name: {names[(i + 1) % cycle_length]} for i, name in enumerate(names)}
    graph["outside"] = {"m0"}
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == names


def imports_ray_on_import(path: Path) -> bool:
    """Whether importing the file imports Ray: an import of it outside functions and outside
    `if TYPE_CHECKING:` (a function that imports Ray does so only when it is called)."""

    def statements(body: list[ast.stmt]):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from statements(node.orelse)
                continue
            yield node
            for field in ("body", "orelse", "finalbody", "handlers"):
                yield from statements(getattr(node, field, []) or [])

    for node in statements(ast.parse(path.read_text(), filename=str(path)).body):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        if any(name == "ray" or name.startswith("ray.") for name in names):
            return True
    return False


def test_the_release_trainer_needs_no_ray():
    """`facetune train-release` runs where only torch is installed (a GPU box without Ray): of the
    modules it can reach through any import, even one inside a function, none imports Ray when
    imported (loading.py's Ray Dataset reader imports it when called, which the release never does)."""
    modules = module_names(PACKAGE_ROOT)
    reached = reachable(import_graph(PACKAGE_ROOT), "facetune.commands.train_release")
    assert "facetune.release.train" in reached
    assert sorted(m for m in reached if imports_ray_on_import(modules[m])) == []


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` can reach through its imports (itself included)."""
    reached, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    return reached


@pytest.mark.parametrize("user", ["facetune.predict.predictor", "facetune.commands.predict", "facetune.commands.serve",
                                  "facetune.commands.export", "facetune.serve.app"])
def test_predict_serve_and_export_learn_where_the_shipped_files_are_without_the_trainer(user):
    reached = reachable(import_graph(PACKAGE_ROOT), user)
    release = {m for m in reached if m == "facetune.release" or m.startswith("facetune.release.")}
    assert release <= {"facetune.release.paths"}
