"""camlens.runs.tasks: a detector and a segmentation model explained into run folders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import camlens
from camlens.backends.torch import cpu_bf16_is_fast
from camlens.runs.local import RunSettings
from camlens.runs.session import Session
from camlens.runs.tasks import TaskSettings, explain_task_files, preprocess_for


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (100, 140, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"im{i}.png")
    return folder


def test_detect_run_has_a_row_and_map_per_detection(images, tmp_path):
    session = Session.from_spec(
        "task_models:detector", preprocess=preprocess_for("detect", "auto"), size=128,
        labels=["background", "cat", "dog"],
    )  # fmt: skip
    assert session.prepare.name == "unit" and session.classes == 3
    summary = explain_task_files(
        session, [str(images)], tmp_path / "out", RunSettings(methods=["gradcam"]),
        TaskSettings("detect", threshold=0.3, limit=2), echo=lambda text: None,
    )  # fmt: skip
    assert summary.done == 2 and not summary.failures
    run = camlens.load_run(tmp_path / "out")
    assert run.info["task"] == "detect" and run.info["threshold"] == 0.3
    assert sorted(run.results["stem"]) == ["im0_0", "im0_1", "im1_0", "im1_1"]
    row = run.results.iloc[0]
    # the stored map is the detection's own map (8-bit), the box in the image's pixels
    found = camlens.explain_detections(session.model, _unit(session, images / "im0.png"),
                                       threshold=0.3, limit=2)  # fmt: skip
    assert row["predicted_name"] == session.name(int(found.labels[0]))
    assert abs(row["probability"] - float(found.scores[0])) < 1e-5
    assert np.abs(run.map(0) - found.explanation.maps[0].numpy()).max() <= 0.5 / 255 + 1e-6
    x0, y0, x1, y1 = found.boxes[0].tolist()
    assert list(row["boxes"][0]) == [round(x0 * 140 / 128), round(y0 * 100 / 128),
                                     round(x1 * 140 / 128), round(y1 * 100 / 128)]  # fmt: skip
    assert run.overlay(0).shape == (100, 140, 3)


def _unit(session, path):
    from camlens.runs.session import resize_unit

    image = np.asarray(Image.open(path).convert("RGB"))
    return session.native(resize_unit(image, session.size)[None])


def test_segment_run_explains_the_largest_class(images, tmp_path):
    session = Session.from_spec("task_models:segmenter", size=64)
    summary = explain_task_files(
        session, [str(images)], tmp_path / "out", RunSettings(methods=["gradcam"]),
        TaskSettings("segment"), echo=lambda text: None,
    )  # fmt: skip
    assert summary.done == 2
    run = camlens.load_run(tmp_path / "out")
    x = _unit(session, images / "im0.png")
    logits = session.model(x)["out"]
    category = int(logits[0].argmax(0).flatten().mode().values)
    exp = camlens.explain(session.model, x, "gradcam", camlens.targets.segmentation(category))
    row = run.results.iloc[0]
    assert row["stem"] == "im0" and row["target"] == category
    assert row["precision"] == "fp32" or cpu_bf16_is_fast()  # --precision auto, this VM: fp32
    assert abs(row["score"] - float(exp.scores[0])) <= 1e-4 * abs(float(exp.scores[0]))
    assert np.abs(run.map(0) - exp.maps[0].numpy()).max() <= 0.5 / 255 + 1e-6


def test_an_image_the_model_raises_for_is_a_failure_row_with_its_error_and_traceback(tmp_path):
    """As the local engine: the reason keeps the error's type, the log its traceback."""
    from toy_models import SHAPE_ERROR, FailsForBrightSegmenter

    session = Session.from_model(FailsForBrightSegmenter().eval(), size=64)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((64, 64, 3), 230, np.uint8)).save(folder / "bright.png")
    Image.fromarray(np.full((64, 64, 3), 10, np.uint8)).save(folder / "dark.png")
    out = tmp_path / "out"
    summary = explain_task_files(
        session, [str(folder)], out, RunSettings(methods=["gradcam"]), TaskSettings("segment"),
        echo=lambda text: None,
    )  # fmt: skip
    reason = f"explaining failed: RuntimeError: {SHAPE_ERROR}"
    assert summary.done == 1 and [f.reason for f in summary.failures] == [reason]
    assert list(camlens.load_run(out).failures["error"]) == [reason]
    log = (out / "camlens.log").read_text()
    assert f"{folder / 'bright.png'}\nTraceback (most recent call last)" in log
    assert f"raise RuntimeError(SHAPE_ERROR)\nRuntimeError: {SHAPE_ERROR}" in log


def test_unknown_task():
    with pytest.raises(camlens.CamlensValueError) as error:
        preprocess_for("count", "auto")
    assert str(error.value) == "--task must be one of classify, detect, segment, got 'count'"


def test_a_resumed_task_run_says_what_it_skips_as_the_local_engine_does(images, tmp_path):
    """One pipeline: tasks' --resume skips the images done and says so in resume's words."""
    session = Session.from_spec("task_models:segmenter", size=64)
    out = tmp_path / "out"
    explain_task_files(
        session, [str(images)], out, RunSettings(methods=["gradcam"]), TaskSettings("segment"),
        echo=lambda text: None,
    )  # fmt: skip
    said: list[str] = []
    summary = explain_task_files(
        session, [str(images)], out, RunSettings(methods=["gradcam"], resume=True),
        TaskSettings("segment"), echo=said.append,
    )  # fmt: skip
    assert summary.resumed == 2 and summary.done == 0 and summary.exit_code == 0
    assert f"resume: 2 image(s) already in {out}, 0 to do" in said
    assert camlens.load_run(out).complete and len(camlens.load_run(out)) == 2
