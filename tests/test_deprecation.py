"""camlens._deprecation.moved: a moved name keeps its old path for one release, with a warning."""

from __future__ import annotations

import importlib
import re
import sys
import textwrap

import pytest

from camlens._deprecation import moved


@pytest.fixture
def fake_pair(tmp_path, monkeypatch):
    """A package whose ``thing`` and ``helper`` moved from ``fakepkg.old`` to ``fakepkg.new``."""
    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "new.py").write_text("thing = object()\n\ndef helper():\n    return 42\n")
    (package / "old.py").write_text(
        textwrap.dedent(
            """
            from camlens._deprecation import moved

            KEPT = 1
            __getattr__, __dir__ = moved(
                __name__, {"thing": "fakepkg.new.thing", "helper": "fakepkg.new.helper"}
            )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("fakepkg.old"), importlib.import_module("fakepkg.new")
    for name in ("fakepkg", "fakepkg.old", "fakepkg.new"):
        sys.modules.pop(name, None)


def test_a_moved_name_warns_and_returns_the_object_from_its_new_place(fake_pair):
    old, new = fake_pair
    with pytest.warns(DeprecationWarning) as caught:
        assert old.thing is new.thing
    assert str(caught[0].message) == (
        "fakepkg.old.thing moved to fakepkg.new.thing; import it from there "
        "(fakepkg.old.thing goes away in the next release)"
    )
    assert caught[0].filename == __file__  # the warning points at the caller's line


def test_from_import_of_a_moved_name_warns(fake_pair):
    with pytest.warns(DeprecationWarning, match="fakepkg.old.helper moved to fakepkg.new.helper"):
        from fakepkg.old import helper
    assert helper() == 42


def test_the_shim_keeps_its_own_names_and_refuses_unknown_ones(fake_pair):
    old, _ = fake_pair
    assert old.KEPT == 1
    assert {"KEPT", "helper", "thing"} <= set(dir(old))
    with pytest.raises(AttributeError, match="module 'fakepkg.old' has no attribute 'gone'"):
        old.gone  # noqa: B018


def test_a_target_that_does_not_exist_fails_at_access():
    getattr_, _ = moved("camlens", {"x": "camlens.no_such_module.x"})
    with pytest.warns(DeprecationWarning), pytest.raises(AttributeError, match="no_such_module"):
        getattr_("x")


def test_nothing_of_ours_imports_a_moved_module():
    """Scripts, benchmarks, tests' helpers and docs import from the new places (the shims are for
    users' code)."""
    from pathlib import Path

    from camlens._deprecation import MOVED_MODULES

    root = Path(__file__).resolve().parents[1]
    files = [*root.glob("scripts/*.py"), *root.glob("benchmarks/*.py"), *root.glob("tests/**/*.py")]
    files += [*root.glob("docs/**/*.md"), *root.glob("docs/**/*.ipynb")]
    pattern = re.compile(r"(?:from|import) (camlens(?:\.\w+)+)")
    found = [
        f"{path.relative_to(root)}: {match.group(1)}"
        for path in files
        if path.name not in {"test_deprecation.py", "test_public_api.py"}
        for match in pattern.finditer(path.read_text(encoding="utf-8"))
        if match.group(1) in MOVED_MODULES
    ]
    assert found == []
