"""docs/zero-shot.md's runnable example (docs/examples/zero_shot.py) runs offline."""

from __future__ import annotations

import runpy
from pathlib import Path

from needs import need

ROOT = Path(__file__).resolve().parents[2]


def test_zero_shot_example_runs(capsys):
    need("open_clip")
    runpy.run_path(str(ROOT / "docs" / "examples" / "zero_shot.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "visual.transformer.resblocks.1.ln_1 (1, 64, 64)" in printed
    assert "['a photo of a boat', 'a photo of a dog'] (1, 2)" in printed
    assert "zero-shot.md" in (ROOT / "mkdocs.yml").read_text()
