"""An import of a facetune module inside a function is there for one reason only: it keeps a
heavy package (torch, Ray, sklearn, ...) off the import of a module that does not load it
already. Everything else is imported at the top of its module, where a reader sees it.

Read with `ast` (nothing is executed): a module loads what its top-level imports load,
transitively, and what its packages' __init__ files load.
"""
from __future__ import annotations

import ast
from pathlib import Path

from test_import_cycles import PACKAGE_ROOT, module_names

#: Packages whose import costs seconds or hundreds of MB: worth deferring.
HEAVY = {"torch", "torchvision", "ray", "sklearn", "scipy", "pandas", "pyarrow", "matplotlib", "cv2", "onnx",
         "onnxruntime"}


def imports_of(module: str, path: Path, known: set[str]) -> tuple[set[str], list[tuple[int, list[str]]]]:
    """(modules imported at top level, outside TYPE_CHECKING; [(line, modules)] imported inside functions)."""
    top: set[str] = set()
    deferred: list[tuple[int, list[str]]] = []

    def targets(node: ast.stmt) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        if node.level:
            parts = module.split(".")
            anchor = parts[: len(parts) - node.level + (1 if path.name == "__init__.py" else 0)]
            base = ".".join(anchor + ([base] if base else []))
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]

    def walk(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if in_function:
                    deferred.append((child.lineno, targets(child)))
                elif not type_checking:
                    top.update(targets(child))
            function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            guarded = isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            walk(child, in_function or function, type_checking or guarded)

    walk(ast.parse(path.read_text(), filename=str(path)), False, False)
    return top, deferred


def heavy_loads(root: Path) -> tuple[dict[str, set[str]], dict[str, list[tuple[int, list[str]]]], set[str]]:
    """({module: heavy packages its import loads}, {module: deferred imports}, known modules)."""
    modules = module_names(root)
    known = set(modules)
    top, deferred = {}, {}
    for name, path in modules.items():
        top[name], deferred[name] = imports_of(name, path, known)

    def resolve(name: str) -> str:
        while name not in known and "." in name:
            name = name.rpartition(".")[0]
        return name

    # What importing each module loads: its own heavy imports and all its dependencies' loads,
    # to a fixed point (a package's __init__ and its submodules import each other).
    depends: dict[str, set[str]] = {}
    loads: dict[str, set[str]] = {}
    for name in modules:
        parts = name.split(".")
        resolved = {resolve(t) for t in top[name] | {".".join(parts[:i]) for i in range(1, len(parts))}}
        depends[name] = {t for t in resolved if t in known and t != name}
        loads[name] = {t.split(".")[0] for t in resolved if t not in known and t.split(".")[0] in HEAVY}
    changed = True
    while changed:
        changed = False
        for name in modules:
            grown = loads[name].union(*(loads[t] for t in depends[name]))
            if grown != loads[name]:
                loads[name], changed = grown, True
    return loads, deferred, known


def needless_deferred_imports(root: Path) -> list[str]:
    """`file:line` of every function-level import of a facetune module that loads nothing heavy
    the importing module does not load already."""
    loads, deferred, known = heavy_loads(root)
    needless = []
    for name, imports in deferred.items():
        for line, targets in imports:
            internal = [t for t in targets if t.split(".")[0] == root.name]
            if internal and len(internal) == len(targets):
                brought = set().union(*(loads.get(t, set()) for t in internal if t in known))
                if brought <= loads[name]:
                    needless.append(f"{name}:{line}")
    return needless


def test_every_deferred_facetune_import_keeps_a_heavy_package_off_a_fast_path():
    assert needless_deferred_imports(PACKAGE_ROOT) == []


def test_a_deferred_import_of_a_light_module_is_needless(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "light.py").write_text("X = 1\n")
    (package / "heavy.py").write_text("import torch\n")
    (package / "user.py").write_text("def f():\n    from pkg.light import X\n    from pkg.heavy import torch\n"
                                     "    return X, torch\n")
    assert needless_deferred_imports(package) == ["pkg.user:2"]
