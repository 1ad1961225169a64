"""``camlens evaluate`` through typer's runner, on a tiny random CNN and a temporary folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from typer.testing import CliRunner

import camlens
from camlens import metrics
from camlens.cli import app
from camlens.images.annotations import read_boxes, to_input_box


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()
        )
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.fixture()
def tiny(monkeypatch) -> nn.Module:
    torch.manual_seed(0)
    model = TinyNet().eval()
    monkeypatch.setattr("camlens.models.specs.load_spec", lambda spec, weights=None, **_: model)
    return model


@pytest.fixture()
def folder(tmp_path):
    data = tmp_path / "images"
    (data / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["path,x0,y0,x1,y1,label"]
    for index, name in enumerate(["a.png", "b.png", "sub/c.png"]):
        pixels = (rng.random((24, 24, 3)) * 80).astype(np.uint8)
        pixels[4:14, 6:18] = 220
        Image.fromarray(pixels).save(data / name)
        rows.append(f"{name},6,4,17,13,{index}")
    rows.append("a.png,0,20,3,23,0")  # a second object in a.png
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("\n".join(rows) + "\n")
    return data, boxes


def run(*args: str):
    result = CliRunner().invoke(app, ["evaluate", *args])
    return result


def test_evaluate_writes_the_table_csv_json_plots_and_report(tiny, folder, tmp_path):
    data, boxes = folder
    out = tmp_path / "out"
    result = run(
        "--model", "tiny", "--data", str(data), "--boxes", str(boxes), "--out", str(out),
        "--method", "gradcam,cam", "--preprocess", "unit", "--size", "24", "--steps", "4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "methods ranked by insertion - deletion" in result.output
    for name in ("metrics.csv", "metrics.json", "deletion.png", "insertion.png", "report.html"):
        assert (out / name).is_file(), name
    assert (out / "deletion.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["method"] for row in rows} == {"gradcam", "cam"}
    assert sorted(row["rank"] for row in rows) == ["1", "2"]
    assert rows[0]["images"] == "3"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["images"] == 3
    assert len(saved["methods"]["gradcam"]["curves"]["deletion"]) == 5
    assert "<table>" in (out / "report.html").read_text()

    # the numbers are the metrics' own, on the same batch (files sorted: a, b, sub/c)
    paths = [data / "a.png", data / "b.png", data / "sub" / "c.png"]
    x, _ = camlens.load_images([np.array(Image.open(p)) for p in paths], preset="unit")
    exp = camlens.explain(tiny, x, method="gradcam")
    per_image = saved["methods"]["gradcam"]["per_image"]
    np.testing.assert_allclose(
        per_image["deletion"], metrics.deletion(tiny, x, exp, steps=4).numpy(), atol=1e-6
    )
    np.testing.assert_allclose(
        per_image["insertion"], metrics.insertion(tiny, x, exp, steps=4).numpy(), atol=1e-6
    )
    groups = [[(6, 4, 17, 13), (0, 20, 3, 23)], [(6, 4, 17, 13)], [(6, 4, 17, 13)]]
    np.testing.assert_allclose(
        per_image["energy"], metrics.energy_pointing_game(exp, groups).numpy(), atol=1e-6
    )
    np.testing.assert_allclose(per_image["pointing"], metrics.pointing_game(exp, groups).numpy())
    wrong = (exp.targets != torch.tensor([0, 1, 2])) | (metrics.box_iou(exp, groups) < 0.5)
    np.testing.assert_allclose(per_image["loc_error"], wrong.float().numpy())


def test_without_boxes_only_faithfulness_runs(tiny, folder, tmp_path):
    data, _ = folder
    out = tmp_path / "out"
    result = run(
        "--model", "tiny", "--data", str(data), "--out", str(out), "--method", "eigencam",
        "--preprocess", "unit", "--size", "24", "--steps", "2", "--limit", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert header == "rank,method,deletion,insertion,average_drop,increase,images,error"


def test_usage_errors_exit_2_with_the_fix(tiny, folder, tmp_path):
    data, _ = folder
    result = run("--model", "tiny", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "--data DIR is required unless --model demo" in result.output
    result = run("--model", "tiny", "--data", str(data), "--out", str(tmp_path), "--metrics", "x")
    assert result.exit_code == 2
    assert "unknown metric 'x' in --metrics; valid: default, all, deletion" in result.output
    result = run("--model", "tiny", "--data", str(tmp_path / "none"), "--out", str(tmp_path))
    assert "is not a folder of images" in result.output
    result = run("--model", "tiny", "--data", str(data), "--out", str(tmp_path), "--precision", "x")
    assert result.exit_code == 2
    assert "precision must be one of fp32, bf16, int8, got 'x'" in result.output


def test_precision_int8_runs_the_curves_and_scorecam_on_int8_copies(tiny, folder, tmp_path):
    data, _ = folder
    out = {precision: tmp_path / precision for precision in ("fp32", "int8")}
    for precision, folder_out in out.items():
        result = run(
            "--model", "tiny", "--data", str(data), "--out", str(folder_out), "--preprocess",
            "unit", "--size", "24", "--method", "scorecam", "--steps", "4",
            "--precision", precision,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    exact, fast = (json.loads((o / "metrics.json").read_text()) for o in out.values())
    assert fast["config"]["precision"] == "int8"
    for name in ("deletion", "insertion"):
        gap = np.abs(
            np.array(fast["methods"]["scorecam"]["per_image"][name])
            - np.array(exact["methods"]["scorecam"]["per_image"][name])
        ).max()
        assert 0 < gap < 0.02, (name, gap)


def test_pascal_voc_boxes_become_zero_based(tmp_path):
    (tmp_path / "one.xml").write_text(
        "<annotation><filename>cat.jpg</filename><object><name>cat</name><bndbox>"
        "<xmin>11</xmin><ymin>21</ymin><xmax>50</xmax><ymax>60</ymax></bndbox></object>"
        "<object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
        "</object></annotation>"
    )
    expected = {"cat.jpg": {"boxes": [(10, 20, 49, 59), (0, 0, 4, 4)], "label": None}}
    assert read_boxes(tmp_path / "one.xml") == expected
    assert read_boxes(tmp_path) == expected


def test_boxes_follow_the_resize():
    # a 100 x 100 image shown at 50 x 50: pixels 10..19 become 5..9
    assert to_input_box((10, 10, 19, 19), (100, 100), (50, 50)) == (5, 5, 9, 9)
    # 256 x 512 (h x w) squeezed to 224 x 224: x scales by 0.4375, y by 0.875
    assert to_input_box((144, 16, 367, 239), (256, 512), (224, 224)) == (63, 14, 160, 209)
    assert to_input_box((0, 0, 511, 255), (256, 512), (224, 224)) == (0, 0, 223, 223)


def test_preprocess_auto_gives_a_checkpoint_its_own_input(tmp_path):
    from camlens.datasets import read_boxes as read_demo_boxes
    from camlens.models.checkpoint import demo_path

    folder = demo_path() / "samples"
    paths, labels, boxes = read_demo_boxes(folder / "boxes.csv")
    names = [Path(p).relative_to(folder).as_posix() for p in paths]
    table = tmp_path / "boxes.csv"
    rows = [
        f"{n},{','.join(map(str, b))},{int(c)}" for n, b, c in zip(names, boxes.tolist(), labels)
    ]
    table.write_text("path,x0,y0,x1,y1,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    result = run(
        "--model", "demo", "--data", str(folder), "--boxes", str(table), "--out", str(out),
        "--method", "gradcam", "--metrics", "energy",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["preprocess"] == "unit (the checkpoint normalises itself)"
    assert saved["config"]["size"] == 64
    order = sorted(range(len(names)), key=lambda i: names[i])  # the folder is read in name order
    x, _ = camlens.load_images([paths[i] for i in order], preset="unit")
    exp = camlens.explain(camlens.load_model("demo"), x, method="gradcam")
    np.testing.assert_allclose(
        saved["methods"]["gradcam"]["per_image"]["energy"],
        metrics.energy_pointing_game(exp, boxes[order]).numpy(),
        atol=1e-6,
    )


def test_demo_runs_with_no_other_flag(tmp_path):
    result = run("--model", "demo", "--out", str(tmp_path / "demo"), "--steps", "4")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert set(saved["methods"]) == set(camlens.methods(camlens.load_model("demo")))
    assert saved["config"]["images"] == 16
    # the scores are those of the bundled samples and their ground-truth boxes
    from camlens.datasets import read_boxes
    from camlens.models.checkpoint import demo_path

    paths, _, boxes = read_boxes(demo_path() / "samples" / "boxes.csv")
    x, _ = camlens.load_images(paths, preset="unit")
    exp = camlens.explain(camlens.load_model("demo"), x, method="gradcam")
    np.testing.assert_allclose(
        saved["methods"]["gradcam"]["per_image"]["energy"],
        metrics.energy_pointing_game(exp, boxes).numpy(),
        atol=1e-6,
    )


def test_non_square_images_are_resized_whole_and_boxes_follow(tmp_path):
    """The model sees the whole image (no centre crop) and the box covers the object: an
    object at the right edge of a 20 x 40 image stays in view and inside its box."""
    from camlens.runs.evaluation import folder_batches
    from camlens.runs.session import Session

    pixels = np.full((20, 40, 3), 255, np.uint8)
    pixels[5:15, 34:40] = 0
    Image.fromarray(pixels).save(tmp_path / "edge.png")
    records = {"edge.png": {"boxes": [(34, 5, 39, 14)], "label": 1}}
    session = Session.from_spec("demo")
    ((x, boxes, labels),) = folder_batches(session, [tmp_path / "edge.png"], tmp_path, records, 4)
    assert x.shape == (1, 3, 64, 64) and labels.tolist() == [1]
    ((x0, y0, x1, y1),) = boxes[0]
    assert (x0, y0, x1, y1) == (54, 16, 63, 47)
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[y0 : y1 + 1, x0 : x1 + 1] = True
    dark = x[0].mean(0) < 0.5
    assert dark.sum() > 150 and not (dark & ~inside).any()


def test_a_factory_model_needs_no_weights_flag(tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(data / "a.png")
    out = tmp_path / "out"
    result = run(
        "--model", "toy_models:SmallCNN", "--data", str(data), "--out", str(out),
        "--method", "gradcam", "--size", "32", "--steps", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["config"]["images"] == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--metrics", "x"], "unknown metric 'x' in --metrics"),
        (["--precision", "x"], "precision must be one of fp32, bf16, int8, got 'x'"),
        (["--method", "nope"], "unknown method 'nope'"),
    ],
)
def test_bad_options_are_found_before_the_model_loads(
    folder, tmp_path, monkeypatch, extra, message
):
    monkeypatch.setattr(
        "camlens.models.specs.load_spec", lambda *a, **k: pytest.fail("model loaded")
    )
    data, boxes = folder
    result = run("--model", "x:y", "--data", str(data), "--out", str(tmp_path / "o"), *extra)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "o").exists()
