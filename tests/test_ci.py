"""What CI holds the code to: no test skips there for want of a library or Chromium, and every
``type: ignore`` says why."""

from __future__ import annotations

import re
from pathlib import Path

import needs
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("ci", "outcome"), [(False, pytest.skip.Exception), (True, pytest.fail.Exception)]
)
def test_a_missing_library_skips_locally_and_fails_in_ci(monkeypatch, ci, outcome):
    monkeypatch.setattr(needs, "IN_CI", ci)
    with pytest.raises(outcome, match="no_such_module_xyz is not installed .*pip install -e"):
        needs.need("no_such_module_xyz")
    assert needs.need("json").dumps([1]) == "[1]"


def test_no_module_level_importorskip():
    """A module-level importorskip skips every test of its module, also those that do not use
    the library: tests and fixtures call needs.need instead (keras_cases runs in subprocesses
    that must not skip, see test_keras)."""
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path.name != "keras_cases.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.match(r"(\w+ = )?pytest\.importorskip\(", line)
    ]
    assert found == []


def test_every_type_ignore_says_why():
    ignores = [
        (f"{path.relative_to(ROOT)}:{number}", line.strip())
        for path in sorted((ROOT / "src").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "type: ignore" in line
    ]
    assert [i for i in ignores if not re.search(r"# type: ignore\[[\w-]+\]  # \S", i[1])] == []


def test_no_test_imports_the_tests_folder_as_a_package():
    """CI runs plain ``pytest``, which puts ``tests/`` on the path but not the repository root:
    ``from tests.toy_models import ...`` works under ``python -m pytest`` only."""
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.match(r"\s*(from tests[. ]|import tests\b)", line)
    ]
    assert found == []
