"""The package's shape, checked mechanically (issue 20): modules a reader can hold at once, no
import cycle, and a function-level import only where it defers an optional dependency.

- no module over 500 lines, no function body over 80 lines (docstring not counted);
- no cycle in the graph of imports between camlens modules, function-level imports included;
- a function-level ``import camlens...`` only for a module that itself imports an optional
  dependency (one not in ``[project] dependencies``) at its top, in ``cli/`` (``camlens --help``
  starts without torch) or in ``camlens/__init__.py``'s lazy exports.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MAX_MODULE, MAX_FUNCTION = 500, 80


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "camlens").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


@cache
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(encoding="utf-8"))


def _target(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The camlens modules an import statement names (a submodule where ``from pkg import sub``)."""
    known = modules()
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    base = node.module or ""
    if node.level:
        package = module.split(".")[: -node.level or None]
        if modules()[module].name == "__init__.py":
            package = module.split(".")[: len(module.split(".")) - node.level + 1]
        base = ".".join([*package, *([base] if base else [])])
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in known else base)
    return [name for name in out if name in known]


def imports(name: str) -> list[tuple[str, bool, int]]:
    """(camlens module imported, at function level?, line) for every import in ``name``."""
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and not _type_checking_only(
                name, child
            ):
                found.extend((t, nested, child.lineno) for t in _target(name, child))
            visit(child, inner)

    visit(tree(name), False)
    return found


def _type_checking_only(name: str, node: ast.stmt) -> bool:
    for block in ast.walk(tree(name)):
        if (
            isinstance(block, ast.If)
            and "TYPE_CHECKING" in ast.unparse(block.test)
            and any(node is child for child in ast.walk(block))
        ):
            return True
    return False


@cache
def core_dependencies() -> frozenset[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {
        dep.split(">")[0].split("<")[0].split("=")[0].split("[")[0]
        for dep in project["dependencies"]
    }
    return frozenset({"PIL" if n == "pillow" else n for n in names} | {"camlens"})


def imports_optional(name: str) -> bool:
    """Whether ``name`` imports a library outside the core dependencies at its top level."""
    std = sys.stdlib_module_names
    for node in tree(name).body:
        if isinstance(node, ast.Import):
            roots = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            roots = [node.module.split(".")[0]]
        else:
            continue
        if any(r not in std and r not in core_dependencies() for r in roots):
            return True
    return False


def violations() -> set[str]:
    found = set()
    for name, path in modules().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE:
            found.add(f"module {name}: {lines} lines")
        for node in ast.walk(tree(name)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                first = body[1] if len(body) > 1 and _is_docstring(body[0]) else body[0]
                length = (node.end_lineno or 0) - first.lineno + 1
                if length > MAX_FUNCTION:
                    found.add(f"function {name}.{node.name}: {length} lines")
        for target, nested, _ in imports(name):
            if nested and not _lazy_allowed(name, target):
                found.add(f"function-level import {name} -> {target}")
    return found


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)


def _lazy_allowed(name: str, target: str) -> bool:
    return name == "camlens" or name.startswith("camlens.cli") or imports_optional(target)


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {name: sorted({t for t, _, _ in imports(name) if t != name}) for name in modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_modules_and_functions_fit_on_a_screen_and_imports_are_at_the_top():
    found = violations() | {f"cycle {' '.join(c)}" for c in cycles()}
    assert sorted(found) == [], "the package's shape (see this module's docstring)"


def test_no_name_hides_a_module():
    """``camlens.targets.detection`` is the target function, so no module may be called so: after
    importing every module, each package's attribute of a submodule's name is that submodule."""
    import importlib
    import types

    import camlens

    camlens.methods()  # a callable package: the registry's names
    for name in modules():
        if name.endswith("__main__") or "serve" in name.split(".") or "distributed" in name:
            continue  # optional dependencies
        importlib.import_module(name)
    for name in modules():
        if "." not in name or name not in sys.modules:
            continue
        parent, child = name.rsplit(".", 1)
        attribute = getattr(sys.modules[parent], child, None)
        assert isinstance(attribute, types.ModuleType), f"{parent}.{child} is {attribute!r}"


if __name__ == "__main__":
    for line in sorted(violations() | {f"cycle {' '.join(c)}" for c in cycles()}):
        print(line)
