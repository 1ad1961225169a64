"""The public API, name by name with signatures, against the checked-in ``public_api.txt``.

The snapshot covers ``camlens``, ``camlens.targets``, ``camlens.metrics``, ``camlens.datasets`` and
every module whose names the docs cite (``camlens.x.y`` in ``README.md``, ``docs/*.md``,
``docs/api/*.md``). A change to it is a change of the contract: update the snapshot on purpose with
``python tests/test_public_api.py --update`` (or ``CAMLENS_UPDATE_API=1 pytest
tests/test_public_api.py``) and say so in the changelog. A name that moves keeps a shim
(``camlens._deprecation.moved``) for one release, so its old path stays in the snapshot.

Annotations are printed as written (the modules use ``from __future__ import annotations``),
default values without memory addresses, and names imported from other packages are left out, so
the text is the same across Python and torch versions.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib
import inspect
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = Path(__file__).with_name("public_api.txt")
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "docs/api").glob("*.md")),
]
UPDATE = (
    "python tests/test_public_api.py --update "
    "(or CAMLENS_UPDATE_API=1 pytest tests/test_public_api.py)"
)

#: Modules always covered, whatever the docs cite.
MODULES = ("camlens", "camlens.datasets", "camlens.metrics", "camlens.targets")
#: ``camlens.`` words in the docs that are file names or placeholders, not Python paths.
NOT_PATHS = {
    "camlens.new.place.old_name",
    "camlens.json",
    "camlens.log",
    "camlens.name",
    "camlens.something",
}
#: Names a module has besides its ``__all__``.
EXTRA = {"camlens": ("__version__",)}
_PATH = re.compile(r"(?<![\w./])camlens(?:\.[A-Za-z_]\w*)+")
_FROM = re.compile(r"^\s*from (camlens(?:\.\w+)*) import", re.MULTILINE)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


# ------------------------------------------------------------------------------ documented paths
def documented_paths() -> list[str]:
    """Every ``camlens.x.y`` path the docs cite (``from camlens.x import`` lines included)."""
    found: set[str] = set()
    for page in DOCS:
        text = page.read_text(encoding="utf-8")
        found.update(match.rstrip(".") for match in _PATH.findall(text))
        found.update(_FROM.findall(text))
    return sorted(found - NOT_PATHS)


def _is_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def resolve(path: str) -> tuple[str, Any]:
    """(the module a documented path lives in, the object it names)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        if _is_module(module):
            obj: Any = sys.modules[module]
            for part in parts[cut:]:
                obj = getattr(obj, part)  # AttributeError: the docs cite a name that is gone
            if cut == len(parts) and cut > 1 and not _attribute_is_module(parts):
                module = ".".join(parts[:-1])  # camlens.methods: the function, not the package
                obj = getattr(sys.modules[module], parts[-1])
            return module, obj
    raise ImportError(f"no module in {path!r}")


def _resolves(path: str) -> tuple[str, Any] | None:
    try:
        return resolve(path)
    except (ImportError, AttributeError):
        return None


def _attribute_is_module(parts: list[str]) -> bool:
    parent = sys.modules[".".join(parts[:-1])]
    return isinstance(getattr(parent, parts[-1], None), types.ModuleType)


def covered_modules() -> list[str]:
    """MODULES, the modules the documented paths live in, and the packages above them."""
    names = set(MODULES)
    for path in documented_paths():
        found = _resolves(path)
        if found is None:
            continue  # test_every_documented_path_resolves names it
        module, obj = found
        names.add(obj.__name__ if isinstance(obj, types.ModuleType) else module)
    for name in list(names):
        parts = name.split(".")
        names.update(".".join(parts[:cut]) for cut in range(1, len(parts)))
    from camlens._deprecation import MOVED_MODULES  # old paths: moved_names.txt covers them

    return sorted(names - set(MOVED_MODULES))


# ------------------------------------------------------------------------------ public names
def _own(obj: Any) -> bool:
    """Not defined by another package (torch, typing, the standard library)."""
    module = getattr(obj, "__module__", None)
    if not (inspect.isclass(obj) or inspect.isroutine(obj)) or module is None:
        return True
    return module == "camlens" or module.startswith("camlens.")


def public_names(module: types.ModuleType) -> list[str]:
    """``__all__``, or the public names the module's source defines or takes from its own
    submodules."""
    extra = EXTRA.get(module.__name__, ())
    if hasattr(module, "__all__"):
        return sorted({*module.__all__, *extra})
    names: set[str] = set()
    prefix = module.__name__ + "."
    for node in _top_level(ast.parse(inspect.getsource(module)).body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(prefix):
            names.update(alias.asname or alias.name for alias in node.names)
    return sorted(n for n in names if not n.startswith("_") and _own(getattr(module, n)))


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.If):
            out += _top_level(node.body) + _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            out += _top_level(node.body) + _top_level(node.orelse) + _top_level(node.finalbody)
    return out


# ------------------------------------------------------------------------------ lines
def _annotation(annotation: Any) -> str:
    if isinstance(annotation, typing.ForwardRef):  # a NamedTuple's field under __future__
        return annotation.__forward_arg__
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        own = annotation.__module__ in ("builtins",) or _own(annotation)
        return (
            annotation.__qualname__ if own else f"{annotation.__module__}.{annotation.__qualname__}"
        )
    return _ADDRESS.sub("", repr(annotation)).replace("typing.", "")


def _default(value: Any) -> str:
    if inspect.isroutine(value) or inspect.isclass(value):
        return f"<{value.__qualname__}>"
    return _ADDRESS.sub("", repr(value))


def signature(obj: Any) -> str:
    """``(a: T, b=1, *, c: U = 'x') -> R``, reproducible across Python versions."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    parts, starred = [], False
    kinds = inspect.Parameter
    for index, param in enumerate(sig.parameters.values()):
        if param.kind is kinds.KEYWORD_ONLY and not starred:
            parts.append("*")
            starred = True
        if param.kind is kinds.VAR_POSITIONAL:
            starred = True
        text = {kinds.VAR_POSITIONAL: "*", kinds.VAR_KEYWORD: "**"}.get(param.kind, "")
        text += param.name
        if param.annotation is not param.empty:
            text += f": {_annotation(param.annotation)}"
        if param.default is not param.empty:
            sep = " = " if param.annotation is not param.empty else "="
            text += sep + _default(param.default)
        parts.append(text)
        after = list(sig.parameters.values())[index + 1 : index + 2]
        if param.kind is kinds.POSITIONAL_ONLY and not (after and after[0].kind is param.kind):
            parts.append("/")
    out = f"({', '.join(parts)})"
    if sig.return_annotation is not sig.empty:
        out += f" -> {_annotation(sig.return_annotation)}"
    return out


def _constant(path: str, value: Any) -> str:
    if isinstance(value, types.ModuleType):
        return f"{path}: module"
    if (
        isinstance(value, (types.GenericAlias, types.UnionType))
        or type(value).__module__ == "typing"
    ):
        return f"{path}: type alias = {_annotation(value)}"
    return f"{path}: {type(value).__qualname__}"


def _public_bases(cls: type) -> list[type]:
    """The bases, a private base replaced by its own public bases."""
    out: list[type] = []
    for base in cls.__bases__:
        for public in _public_bases(base) if base.__name__.startswith("_") else [base]:
            if public not in out:
                out.append(public)
    return out


def _defining_class(cls: type, name: str) -> type | None:
    return next((k for k in cls.__mro__ if name in vars(k)), None)


def class_lines(path: str, cls: type) -> list[str]:
    """The class with its bases, its constructor and its public members (those camlens defines)."""
    bases = ", ".join(b.__qualname__ for b in _public_bases(cls) if b is not object)
    lines = [f"class {path}({bases})" if bases else f"class {path}"]
    makers = ("__init__", "__new__")
    if not getattr(cls, "_is_protocol", False) and any(
        (k := _defining_class(cls, m)) is not None and k is not object and _own(k) for m in makers
    ):
        lines.append(f"{path}{signature(cls)}")
    members = {n for n in dir(cls) if not n.startswith("_")} | {"__call__"}
    members |= {n for n in _annotations_of(cls) if not n.startswith("_")}
    for name in sorted(members):
        owner = _defining_class(cls, name)
        if owner is not None and not _own(owner):
            continue
        lines.append(_member(f"{path}.{name}", cls, owner, name))
    return [line for line in lines if line]


def _annotations_of(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if _own(klass):
            out.update(vars(klass).get("__annotations__", {}))
    return out


def _member(path: str, cls: type, owner: type | None, name: str) -> str:
    if owner is None:  # annotated only: a dataclass field without default, a protocol attribute
        annotation = _annotations_of(cls).get(name)
        return "" if annotation is None else f"{path}: {_annotation(annotation)}"
    raw = vars(owner)[name]
    if isinstance(raw, (property, functools.cached_property)):
        getter = raw.fget if isinstance(raw, property) else raw.func
        returns = inspect.signature(getter).return_annotation if getter else inspect._empty
        kind = "cached property" if isinstance(raw, functools.cached_property) else "property"
        kind += " (settable)" if isinstance(raw, property) and raw.fset is not None else ""
        return f"{path}: {kind}" + (
            "" if returns is inspect._empty else f" -> {_annotation(returns)}"
        )
    if isinstance(raw, staticmethod):
        return f"staticmethod {path}{signature(raw.__func__)}"
    if isinstance(raw, classmethod):
        return f"classmethod {path}{signature(getattr(cls, name))}"
    if inspect.isfunction(raw):
        return f"{path}{signature(raw)}"
    if inspect.isclass(raw):
        return f"class {path}"
    annotation = _annotations_of(cls).get(name)
    if annotation is not None:
        return f"{path}: {_annotation(annotation)}"
    return _constant(path, raw)


def object_lines(path: str, obj: Any) -> list[str]:
    if inspect.isclass(obj):
        return class_lines(path, obj)
    if inspect.isroutine(obj):
        return [f"{path}{signature(obj)}"]
    return [_constant(path, obj)]


def snapshot() -> str:
    """The public API as text, one line per name (classes: one per member)."""
    lines = [
        "# camlens public API: generated by tests/test_public_api.py; do not edit by hand.",
        f"# Update on purpose: {UPDATE}",
    ]
    for name in covered_modules():
        module = importlib.import_module(name)
        lines += ["", f"module {name}"]
        for attribute in public_names(module):
            lines += object_lines(f"{name}.{attribute}", getattr(module, attribute))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ tests
def test_public_api_matches_the_snapshot():
    current = snapshot()
    if os.environ.get("CAMLENS_UPDATE_API") == "1":
        SNAPSHOT.write_text(current, encoding="utf-8")
    expected = SNAPSHOT.read_text(encoding="utf-8") if SNAPSHOT.exists() else ""
    if current != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                current.splitlines(keepends=True),
                "tests/public_api.txt (checked in)",
                "public API (now)",
            )
        )
        pytest.fail(
            f"the public API changed:\n{diff}\nIf the change is on purpose, update the snapshot "
            f"with {UPDATE} and note it in the changelog; a moved name keeps a shim "
            "(camlens._deprecation.moved) for one release.",
            pytrace=False,
        )


def test_every_documented_path_resolves():
    missing = [path for path in documented_paths() if _resolves(path) is None]
    assert missing == [], (
        "the docs cite paths that do not exist (fix the page, or add a file name or placeholder "
        "to NOT_PATHS in tests/test_public_api.py)"
    )


def test_the_snapshot_covers_the_documented_modules():
    text = SNAPSHOT.read_text(encoding="utf-8")
    for name in (
        "camlens.images.decode",
        "camlens.runs.folder",
        "camlens.models.checkpoint",
        "camlens.metrics",
    ):
        assert f"\nmodule {name}\n" in text
    assert "\ncamlens.images.decode.read_image(" in text
    assert "\ncamlens.explain(model" in text


MOVED_NAMES = Path(__file__).with_name("moved_names.txt")


def _moved_names() -> list[str]:
    lines = MOVED_NAMES.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def test_moved_names_still_resolve():
    """Every public name of a module that moved is still there at its old path, the same object
    as at the new one, with a DeprecationWarning that names the new module."""
    from camlens._deprecation import MOVED_MODULES

    assert len(_moved_names()) > 80
    for path in _moved_names():
        old, name = path.rsplit(".", 1)
        new = MOVED_MODULES[old]
        with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}; import {name} "):
            shimmed = getattr(importlib.import_module(old), name)
        assert shimmed is getattr(importlib.import_module(new), name), path


def test_old_module_paths_import_with_from():
    with pytest.warns(
        DeprecationWarning, match="camlens.app.inputs moved to camlens.images.decode"
    ):
        from camlens.app.inputs import read_image
    from camlens.images.decode import read_image as new

    assert read_image is new
    with pytest.warns(DeprecationWarning, match="camlens.run moved to camlens.runs.folder"):
        import camlens

        assert camlens.run.load_run is camlens.load_run


def test_no_file_is_left_at_an_old_path():
    src = ROOT / "src"
    from camlens._deprecation import MOVED_MODULES

    for old in MOVED_MODULES:
        parts = old.split(".")
        assert not src.joinpath(*parts).with_suffix(".py").exists(), old
        assert not src.joinpath(*parts, "__init__.py").exists(), old


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(f"usage: python {Path(__file__).name} --update  (rewrites {SNAPSHOT.name})")
    sys.path.insert(0, str(ROOT / "src"))
    SNAPSHOT.write_text(snapshot(), encoding="utf-8")
    print(f"wrote {SNAPSHOT}")
