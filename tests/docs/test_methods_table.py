"""scripts/methods_table.py: the evaluate ranking as a table between docs/methods.md's markers."""

from __future__ import annotations

import pytest
from repo_scripts import load_script

methods_table = load_script("methods_table")

ROWS = [
    {"rank": "2", "method": "cam", "deletion": "0.25", "insertion": "0.5", "images": "16",
     "error": ""},
    {"rank": "1", "method": "gradcam", "deletion": "0.125", "insertion": "0.75", "images": "16",
     "error": ""},
]  # fmt: skip


def test_table_in_rank_order_with_the_metric_columns():
    lines = methods_table.table(ROWS, 50).splitlines()
    assert "16 bundled samples" in lines[0] and "--steps 50" in lines[0]
    assert lines[2] == "| rank | method | deletion | insertion |"
    assert lines[4:] == ["| 1 | `gradcam` | 0.125 | 0.750 |", "| 2 | `cam` | 0.250 | 0.500 |"]


def test_the_page_has_one_pair_of_markers_and_only_their_inside_changes():
    page = methods_table.PAGE.read_text()
    updated = methods_table.between_markers(page, "TABLE")
    head, tail = page.split(methods_table.START)[0], page.split(methods_table.END)[1]
    assert updated == f"{head}{methods_table.START}\nTABLE\n{methods_table.END}{tail}"
    with pytest.raises(SystemExit, match="needs one"):
        methods_table.between_markers("no markers", "TABLE")
