"""docs/tasks.md: every Python example runs as it is (random weights, nothing downloaded)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from needs import need

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = re.findall(r"```python\n(.+?)\n```", (ROOT / "docs" / "tasks.md").read_text(), re.S)


def test_one_example_per_task():
    assert len(EXAMPLES) == 6


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_example_runs(index, tmp_path, monkeypatch):
    code = EXAMPLES[index]
    if "ultralytics" in code:
        monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
        monkeypatch.setenv("YOLO_OFFLINE", "1")
        need("ultralytics")
    monkeypatch.chdir(tmp_path)  # files the examples write (clip.gif, resnet18.pt2)
    exec(compile(code, f"docs/tasks.md example {index}", "exec"), {"__name__": "__main__"})
