"""docs/architecture.md and docs/extend.md are true to the code: every ``camlens.x.y`` they cite
imports (not through an old, forwarded path), every ``src/camlens/...`` file or folder exists, and
every name given for a file (```src/camlens/x.py`: `name`, `Class.method```) is defined there."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from camlens._deprecation import MOVED_MODULES

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("architecture.md", "extend.md")
#: ``camlens.`` words that are file names or placeholders (extend.md's examples), not Python paths.
NOT_PATHS = {
    "camlens.json",
    "camlens.log",
    "camlens.name",
    "camlens.something",
    "camlens.new.place.old_name",
}

DOTTED = re.compile(r"(?<![\w./-])camlens(?:\.[A-Za-z_]\w*)+")
#: A path in the source tree, with or without ``src/`` (extend.md writes ``camlens/...``).
SOURCE = re.compile(r"(?<![\w./-])(?:src/)?camlens/[\w/]*(?:\.py|/)")
#: ```src/camlens/x.py`: `name`, `Class.attribute```: names defined in that file.
DEFINES = re.compile(r"`((?:src/)?camlens/[\w/]+\.py)`: ((?:`[\w.]+`(?:, )?)+)")


def text(page: str) -> str:
    return (ROOT / "docs" / page).read_text(encoding="utf-8")


def module_of(path: str) -> str:
    """``src/camlens/a/b.py`` -> ``camlens.a.b`` (a package's ``__init__.py`` -> the package)."""
    parts = path.removeprefix("src/").removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lookup(path: str) -> object:
    """The object at a dotted path: its longest importable module, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ModuleNotFoundError(path)


@pytest.mark.parametrize("page", PAGES)
def test_every_dotted_name_exists_at_its_new_place(page):
    names = sorted({m.rstrip(".") for m in DOTTED.findall(text(page))} - NOT_PATHS)
    assert len(names) > 3
    old = [n for n in names if any(n == m or n.startswith(m + ".") for m in MOVED_MODULES)]
    assert old == [], "the page cites old module paths; cite their new place"
    missing = []
    for name in names:
        try:
            lookup(name)
        except (ImportError, AttributeError) as error:
            missing.append(f"{name}: {error}")
    assert missing == []


@pytest.mark.parametrize("page", PAGES)
def test_every_source_path_exists(page):
    paths = sorted(set(SOURCE.findall(text(page))))
    assert len(paths) > 3
    missing = [p for p in paths if not (ROOT / "src" / p.removeprefix("src/")).exists()]
    assert missing == []


@pytest.mark.parametrize("page", PAGES)
def test_names_given_for_a_file_are_defined_in_it(page):
    pairs = [
        (path, name)
        for path, names in DEFINES.findall(text(page))
        for name in re.findall(r"`([\w.]+)`", names)
    ]
    if page == "architecture.md":  # the path of one image is a table of such pairs
        assert len(pairs) > 30
    missing = []
    for path, name in pairs:
        try:
            lookup(f"{module_of(path)}.{name}")
        except (ImportError, AttributeError) as error:
            missing.append(f"{path}: {name} ({error})")
    assert missing == []


def test_the_map_names_every_package():
    """The package map lists every subpackage of camlens and no package that is not there."""
    top = text("architecture.md").split("## The path of one image")[0]
    listed = set(re.findall(r"^\| `(\w+)/` \|", top, re.MULTILINE))
    packages = {p.parent.name for p in (ROOT / "src" / "camlens").glob("*/__init__.py")}
    assert listed == packages
