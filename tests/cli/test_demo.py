"""``camlens demo``: the bundled model on the bundled samples, scored against their boxes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from camlens.cli import app
from camlens.runs.demo import run_demo


def test_demo_command_writes_the_report_and_prints_the_scores(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--method", "cam,gradcam", "-q", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = (out / "results.jsonl").read_text().splitlines()  # demo: png overlays, panels
    records = [json.loads(line) for line in lines]
    assert len(records) == 32 and {r["method"] for r in records} == {"cam", "gradcam"}
    assert all(r["boxes"] for r in records)  # --boxes is on: the CAM paper's box per overlay
    assert (out / "report.html").is_file() and len(list((out / "panels").glob("*.png"))) == 16
    # cam and gradcam put their maximum inside the digit's box on all 16 samples
    rows = [
        line.split()
        for line in result.output.splitlines()
        if "│ cam " in line or "│ gradcam " in line
    ]
    assert [row[3] for row in rows] == ["1.000", "1.000"]


def test_scores_agree_with_the_metrics(tmp_path):
    import camlens
    from camlens import metrics
    from camlens.datasets import read_boxes
    from camlens.models.checkpoint import demo_path

    scores, summary = run_demo(tmp_path / "d", ["eigencam"], echo=lambda t: None)
    assert summary.exit_code == 0 and [s.method for s in scores] == ["eigencam"]
    model = camlens.load_model("demo")
    paths, _, boxes = read_boxes(demo_path() / "samples" / "boxes.csv")
    x, _ = model.load_images(paths)
    exp = camlens.explain(model, x, method="eigencam")
    assert scores[0].pointing_game == float(metrics.pointing_game(exp.maps, boxes).mean())
    assert abs(scores[0].box_iou - float(metrics.box_iou(exp.maps, boxes).mean())) < 1e-6
