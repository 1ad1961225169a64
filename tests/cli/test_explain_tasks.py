"""``camlens explain --task detect|segment`` through the CLI runner (random-weight models)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

import camlens
from camlens.cli import app

runner = CliRunner()


def _folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (90, 120, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"im{i}.png")
    return folder


def test_detect_draws_each_detection_over_its_own_map(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("background\ncat\ndog\n")
    out = tmp_path / "out"
    args = ["explain", str(_folder(tmp_path)), "--model", "task_models:detector", "--size", "128"]
    args += ["--task", "detect", "--min-score", "0.3", "--detections", "2"]
    args += ["--labels", str(labels), "--method", "gradcam,eigencam", "--overlay-format", "png"]
    result = runner.invoke(app, [*args, "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    run = camlens.load_run(out)
    assert run.info["task"] == "detect" and run.info["preprocess"] == "unit"
    assert len(run.results) == 2 * 2 * 2  # images x detections x methods
    assert set(run.results["predicted_name"]) <= {"background", "cat", "dog"}
    for _, row in run.results.iterrows():
        picture = np.asarray(Image.open(out / row["overlay"]).convert("RGB"))
        assert picture.shape == (90, 120, 3)
        x0, y0, x1, y1 = row["boxes"][0]
        y = min(max((y0 + y1) // 2, 0), 89)
        assert tuple(picture[y, max(x0, 0)]) == (0, 255, 0)  # the box's left edge over the map


def test_segment_explains_the_target_region(tmp_path):
    out = tmp_path / "out"
    args = ["explain", str(_folder(tmp_path)), "--model", "task_models:segmenter", "--size", "64"]
    args += ["--task", "segment", "--target", "2", "--out", str(out), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = camlens.load_run(out)
    assert list(run.results["target"]) == [2, 2] and run.info["task"] == "segment"
    assert run.results["layer"].tolist() == ["classifier.cbr"] * 2


def test_unknown_task_is_a_usage_error(tmp_path):
    args = ["explain", str(_folder(tmp_path)), "--model", "task_models:segmenter"]
    result = runner.invoke(app, args + ["--task", "count", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "--task must be one of classify, detect, segment, got 'count'" in result.output
