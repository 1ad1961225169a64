"""docs/onnx.md's example, docs/examples/onnx_model.py, runs as it is (offline)."""

from __future__ import annotations

import runpy
from pathlib import Path

from needs import need

ROOT = Path(__file__).resolve().parents[2]


def test_onnx_example_runs(tmp_path, monkeypatch, capsys):
    need("onnxruntime")
    monkeypatch.chdir(tmp_path)  # the example writes tiny.onnx
    runpy.run_path(str(ROOT / "docs" / "examples" / "onnx_model.py"), run_name="__main__")
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].endswith("auto: /3/Relu_output_0")
    assert printed[2].startswith("eigencam /3/Relu_output_0 (2, 64, 64) ")
    assert "docs/examples/onnx_model.py" in (ROOT / "docs" / "onnx.md").read_text()
