"""A run end to end: the local engine writes a run folder, camlens.load_run reads it back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import camlens
import camlens.runs.local as engine
from camlens.models.checkpoint import demo_path
from camlens.runs.local import RunSettings, explain_files
from camlens.runs.records import RenderOptions
from camlens.runs.session import Session
from camlens.runs.writer import RunWriter

SAMPLES = demo_path() / "samples"


@pytest.fixture(scope="module")
def demo() -> Session:
    return Session.from_spec("demo")


@pytest.fixture(scope="module")
def labelled(demo, tmp_path_factory):
    """The 16 bundled samples (class folders 0..9) with Grad-CAM and CAM, true labels known."""
    out = tmp_path_factory.mktemp("run")
    settings = RunSettings(["gradcam", "cam"], batch_size=5, labels_from_folders=True)
    summary = explain_files(demo, [str(SAMPLES / "*" / "*.png")], out, settings, echo=print)
    return out, summary


def test_rows_and_labels(labelled):
    out, summary = labelled
    run = camlens.load_run(out)
    assert (summary.done, summary.exit_code, len(run), len(run.failures)) == (16, 0, 32, 0)
    rows = run.results
    assert list(rows.columns) == camlens.runs.folder.schema().names
    assert (rows.groupby("path")["method"].apply(sorted) == pd.Series([["cam", "gradcam"]] * 16,
            index=sorted(set(rows["path"])))).all()  # fmt: skip
    folders = rows["path"].map(lambda p: p.split("/")[-2])
    assert (rows["true_name"] == folders).all() and (
        rows["true_label"] == folders.astype(int)
    ).all()
    assert (rows["correct"] == (rows["predicted"] == rows["true_label"])).all()
    assert int(rows["correct"].sum()) == 30  # the bundled model reads one 6 as a 4 (2 methods)
    assert (rows["target"] == rows["predicted"]).all() and set(rows["layer"]) == {"backbone.block5"}
    assert run.complete and run.info["images"] == 16 and run.info["methods"] == ["gradcam", "cam"]
    assert not (out / "parts").exists() and not (out / "images").exists()
    assert len((out / "results.jsonl").read_text().splitlines()) == 32
    assert len(pd.read_csv(out / "results.csv")) == 32


def test_maps_are_the_explanations_within_8_bit_rounding(labelled, demo):
    out, _ = labelled
    run = camlens.load_run(out)
    for i in (0, 7, 31):
        row = run.results.iloc[i]
        with Image.open(row["path"]) as opened:
            image = np.array(opened.convert("RGB"))
        exp = camlens.explain(demo.model, demo.to_input([image]), method=row["method"])
        stored = run.map(i)
        assert stored.shape == (64, 64) and stored.dtype == np.float32
        assert np.abs(stored - exp.maps[0].numpy()).max() <= 0.5 / 255 + 1e-6
        again = run.overlay(i, colormap="turbo", alpha=0.7, threshold=0.2)
        expected = camlens.overlay(image, stored, colormap="turbo", alpha=0.7, threshold=0.2)
        assert np.array_equal(again, expected) and again.shape == image.shape
        with Image.open(out / row["overlay"]) as picture:
            assert picture.format == "JPEG" and picture.size == (row["width"], row["height"])


def test_target_label_explains_the_true_class(demo, tmp_path):
    settings = RunSettings(["cam"], target="label", labels_from_folders=True, batch_size=16)
    explain_files(demo, [str(SAMPLES / "*" / "*.png")], tmp_path, settings, echo=print)
    rows = camlens.load_run(tmp_path).results
    assert (rows["target"] == rows["true_label"]).all()
    wrong = rows[~rows["correct"].astype(bool)]
    assert len(wrong) == 1 and wrong.iloc[0]["target"] != wrong.iloc[0]["predicted"]
    with pytest.raises(camlens.CamlensValueError, match="add --labels-from-folders"):
        explain_files(
            demo, [str(SAMPLES / "*" / "*.png")], tmp_path, RunSettings(["cam"], target="label")
        )


def test_interrupted_run_loses_nothing_and_resumes(demo, tmp_path, monkeypatch):
    real = engine.explain_batch
    seen: list[str] = []

    def interrupted(session, unit, paths, *args, **kwargs):
        if seen:
            raise KeyboardInterrupt
        seen.extend(map(str, paths))
        return real(session, unit, paths, *args, **kwargs)

    monkeypatch.setattr(engine, "explain_batch", interrupted)
    settings = RunSettings(["gradcam"], batch_size=6)
    with pytest.raises(KeyboardInterrupt):
        explain_files(demo, [str(SAMPLES / "*" / "*.png")], tmp_path, settings, echo=print)
    run = camlens.load_run(tmp_path)
    assert sorted(run.results["path"]) == sorted(seen) and len(seen) == 6
    assert not run.complete and (tmp_path / "report.html").is_file()

    seen_again: list[str] = []

    def counting(session, unit, paths, *args, **kwargs):
        seen_again.extend(map(str, paths))
        return real(session, unit, paths, *args, **kwargs)

    monkeypatch.setattr(engine, "explain_batch", counting)
    messages: list[str] = []
    settings = RunSettings(["gradcam"], batch_size=6, resume=True)
    summary = explain_files(
        demo, [str(SAMPLES / "*" / "*.png")], tmp_path, settings, echo=messages.append
    )
    assert summary.resumed == 6 and summary.done == 10 and not set(seen) & set(seen_again)
    assert f"resume: 6 image(s) already in {tmp_path}, 10 to do" in messages
    run = camlens.load_run(tmp_path)
    assert run.complete and len(run) == 16 and run.results["path"].is_unique


def test_rows_of_a_killed_run_are_read_from_its_parts(tmp_path):
    """A process killed between batches leaves parts and no results.parquet: load_run reads
    them, a later failure of the same file is superseded by its success, and a part being
    written (a temporary name) is ignored."""
    from camlens.runs.records import Record

    writer = RunWriter(tmp_path, {"methods": ["cam"]})
    Image.new("L", (4, 4), 51).save(tmp_path / "maps" / "a_cam.png")
    row = {
        "path": "/x/a.png",
        "method": "cam",
        "predicted": 3,
        "probability": 0.5,
        "map": "maps/a_cam.png",
        "overlay": "overlays/a_cam.jpg",
        "boxes": [[0, 1, 2, 3]],
    }
    writer.write([], [engine.Failure("/x/a.png", "explaining failed: boom")])
    writer.write([Record(row)], [engine.Failure("/x/b.png", "empty file (0 bytes)")])
    (tmp_path / "parts" / ".part-000002.parquet.tmp").write_bytes(b"half a file")
    run = camlens.load_run(tmp_path)
    assert not (tmp_path / "results.parquet").exists() and not run.complete
    assert run.results["path"].tolist() == ["/x/a.png"] and run.results["predicted"][0] == 3
    assert run.results["boxes"][0].tolist()[0].tolist() == [0, 1, 2, 3]
    assert run.failures.values.tolist() == [["/x/b.png", "empty file (0 bytes)"]]
    assert np.allclose(run.map(0), 0.2)
    assert not (tmp_path / "results.jsonl").exists()  # written by finish, from the merged rows
    writer.finish()
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [line["path"] for line in lines] == ["/x/a.png", "/x/b.png"]


def test_not_a_run_folder(tmp_path):
    with pytest.raises(camlens.CamlensValueError, match="is not a camlens run folder"):
        camlens.load_run(tmp_path)
    with pytest.raises(camlens.CamlensValueError, match="row 5 is out of range"):
        RunWriter(tmp_path, {})
        camlens.load_run(tmp_path).map(5)


def test_options_panel_copy_and_png(demo, tmp_path):
    files = sorted(SAMPLES.glob("*/*.png"))[:2]
    render = RenderOptions(overlay_format="png", panel=True, copy_images=True, boxes=True)
    explain_files(demo, files, tmp_path, RunSettings(["gradcam"], render=render), echo=print)
    run = camlens.load_run(tmp_path)
    for _, row in run.results.iterrows():
        assert (tmp_path / row["panel"]).is_file() and row["overlay"].endswith(".png")
        assert (tmp_path / row["image"]).read_bytes() == Path(row["path"]).read_bytes()
        (box,) = row["boxes"]
        assert 0 <= box[0] <= box[2] < row["width"] and 0 <= box[1] <= box[3] < row["height"]
    with Image.open(files[0]) as opened:
        assert np.array_equal(run.image(0), np.array(opened.convert("RGB")))
    torch.testing.assert_close(torch.tensor(run.map(1)).shape, torch.Size([64, 64]))


def test_a_failing_write_stops_the_run_and_keeps_what_was_written(demo, tmp_path, monkeypatch):
    real = engine.render
    calls = []

    def full_disk(explained, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(explained, *args, **kwargs)

    monkeypatch.setattr(engine, "render", full_disk)
    settings = RunSettings(["cam"], batch_size=4)
    with pytest.raises(OSError, match="No space left on device"):
        explain_files(demo, [str(SAMPLES / "*" / "*.png")], tmp_path, settings, echo=print)
    run = camlens.load_run(tmp_path)
    assert len(run) >= 4 and not run.complete and (tmp_path / "results.parquet").is_file()


@pytest.mark.filterwarnings("ignore::camlens.errors.CamlensWarning")
def test_an_image_the_model_answers_nan_for_is_a_failure_row_not_a_black_map(tmp_path):
    """The library gives NaN maps for an image whose logits are NaN; a run records that image as
    a failure with the reason (exit code 1), explains the others, and writes no map for it."""
    from toy_models import NaNForNegative

    torch.manual_seed(0)
    session = Session.from_model(NaNForNegative().eval(), size=64)  # ImageNet normalisation
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((64, 64, 3), 230, np.uint8)).save(folder / "bright.png")
    Image.fromarray(np.full((64, 64, 3), 10, np.uint8)).save(folder / "dark.png")  # mean < 0
    summary = explain_files(
        session, [folder], tmp_path / "out", RunSettings(["gradcam", "cam"]), echo=lambda _: None
    )
    assert summary.exit_code == 1 and summary.done == 1
    assert [(Path(f.path).name, f.reason) for f in summary.failures] == [
        ("dark.png", "the model's output is NaN or inf for this image: nothing to explain")
    ]
    run = camlens.load_run(tmp_path / "out")
    assert sorted(run.results["method"]) == ["cam", "gradcam"]
    assert set(run.results["path"].map(lambda p: Path(p).name)) == {"bright.png"}
    assert list(run.failures["path"].map(lambda p: Path(p).name)) == ["dark.png"]
    assert sorted(p.name for p in (tmp_path / "out" / "maps").iterdir()) == [
        "bright_cam.png",
        "bright_gradcam.png",
    ]


def test_a_batch_the_model_raises_for_is_a_failure_row_with_its_error_and_traceback(tmp_path):
    """The failure rows of a batch the model raised for keep the exception's type and message;
    its traceback goes to OUT/camlens.log; the other batches are explained."""
    from toy_models import SHAPE_ERROR, FailsForBright

    session = Session.from_model(FailsForBright().eval(), size=64)  # ImageNet normalisation
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((64, 64, 3), 230, np.uint8)).save(folder / "bright.png")
    Image.fromarray(np.full((64, 64, 3), 10, np.uint8)).save(folder / "dark.png")
    out = tmp_path / "out"
    settings = RunSettings(["gradcam"], batch_size=1)
    summary = explain_files(session, [folder], out, settings, echo=lambda _: None)
    reason = f"explaining failed: RuntimeError: {SHAPE_ERROR}"
    assert summary.exit_code == 1 and summary.done == 1
    assert [(Path(f.path).name, f.reason) for f in summary.failures] == [("bright.png", reason)]
    assert list(camlens.load_run(out).failures["error"]) == [reason]
    log = (out / "camlens.log").read_text()
    assert "bright.png" in log and "Traceback (most recent call last)" in log
    assert f"in forward\n    raise RuntimeError(SHAPE_ERROR)\nRuntimeError: {SHAPE_ERROR}" in log
