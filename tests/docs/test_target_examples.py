"""docs/multi-label.md and docs/regression.md: their examples (docs/examples/*.py, shown whole in
the pages) run offline."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = {"multi_label.py": "multi-label.md", "regression.py": "regression.md"}


@pytest.mark.parametrize("name", sorted(PAGES))
def test_example_runs_and_is_shown_whole(name, capsys):
    script = ROOT / "docs" / "examples" / name
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out
    page = (ROOT / "docs" / PAGES[name]).read_text()
    assert f"```python\n{script.read_text()}```" in page
