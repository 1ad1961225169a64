"""``camlens explain`` through the CLI runner: outputs, failures, exit codes, resume."""

from __future__ import annotations

import csv
import json
import urllib.error

import pytest
import torchvision
from html_check import html_problems
from PIL import Image
from typer.testing import CliRunner

import camlens
import camlens.runs.local as engine
from camlens.backends.torch import cpu_bf16_is_fast
from camlens.cli import app

runner = CliRunner()


def results(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def explained(out):
    return [line for line in results(out) if line["error"] is None]


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 0 moveto 10 10 lineto stroke\n"


def test_folder_with_bad_files(images, model_args, tmp_path):
    out = tmp_path / "out"
    (images / "trap.jpg").write_bytes(EPS)  # an EPS named .jpg: refused, no Ghostscript
    args = [
        "explain",
        str(images),
        *model_args,
        "--method",
        "gradcam,cam",
        "--boxes",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = explained(out)
    paths = {line["path"] for line in lines}
    assert {p.rsplit("/", 1)[-1] for p in paths} == {"chelsea.jpg", "ramp.png", "gray.jpg"}
    assert len(lines) == 3 * 2 and {line["method"] for line in lines} == {"gradcam", "cam"}
    # both failures named with their reasons, in the log and in the closing summary
    assert f"{images / 'corrupt.jpg'}: corrupt or truncated image" in result.output
    assert f"{images / 'trap.jpg'}: not a supported image format (EPS)" in result.output
    assert "2 input(s) failed:" in result.output
    assert "notes.txt" not in result.output  # not an image file: ignored, and counted
    assert ", 1 non-image file(s) ignored;" in result.output
    page = (out / "report.html").read_text()
    assert html_problems(page) == []
    assert "corrupt.jpg" in page and "trap.jpg" in page
    with open(out / "results.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 8  # 6 rows and the 2 failures
    run = camlens.load_run(out)
    assert len(run) == 6 and sorted(run.failures["path"]) == [
        str(images / "corrupt.jpg"),
        str(images / "trap.jpg"),
    ]
    for line in lines:
        assert line["layer"] == "layer4"
        assert line["predicted_name"] in camlens.images.labels.imagenet_classes()
        assert 0 < line["probability"] <= 1 and line["load_s"] >= 0 and line["render_s"] > 0
        # --precision auto: fp32 on a CPU whose bf16 is slow (this VM's), CAM never autocasts
        fast = line["method"] == "gradcam" and cpu_bf16_is_fast()
        assert line["precision"] == "fp32" or (fast and line["precision"] == "bf16")
        with Image.open(out / line["overlay"]) as overlay, Image.open(line["path"]) as original:
            assert overlay.size == (line["width"], line["height"])
            assert overlay.format == "JPEG"
            # the image's own size, but a JPEG over 4x the model's side (64) is decoded reduced
            drafted = original.format == "JPEG" and min(original.size) > 4 * 64
            scale = 2 if drafted else 1  # chelsea, 451x300: half size, at least 2 x 64
            assert overlay.size == (-(-original.width // scale), -(-original.height // scale))
        with Image.open(out / line["map"]) as stored:
            assert stored.mode == "L" and stored.size == (64, 64)
        (box,) = line["boxes"]
        assert 0 <= box[0] <= box[2] < line["width"] and 0 <= box[1] <= box[3] < line["height"]
        assert line["panel"] is None and line["image"] is None  # both opt-in
    assert not (out / "panels").exists() and not (out / "images").exists()


def test_all_good_exit_0_and_target_by_name(images, model_args, tmp_path):
    out = tmp_path / "out"
    args = ["explain", str(images / "chelsea.jpg"), *model_args, "--target", "tabby", "--panel"]
    args += ["--copy-images", "--overlay-format", "webp"]
    result = runner.invoke(app, [*args, "--out", str(out), "--colormap", "viridis"])
    assert result.exit_code == 0, result.output
    (line,) = results(out)
    assert (line["target"], line["target_name"]) == (281, "tabby")
    assert (out / line["panel"]).is_file() and line["overlay"].endswith(".webp")
    assert (out / line["image"]).read_bytes() == (images / "chelsea.jpg").read_bytes()


def test_resume_after_an_interrupted_run(images, model_args, tmp_path, monkeypatch, interrupt):
    out = tmp_path / "out"
    args = ["explain", str(images), *model_args, "--batch-size", "1", "--out", str(out)]
    real = interrupt.real
    first = runner.invoke(app, args)
    assert first.exit_code != 0
    (done,) = interrupt.done
    assert [line["path"] for line in explained(out)] == [str(p) for p in done]
    assert (out / "report.html").is_file() and (out / "results.csv").is_file()

    seen = []

    def counting(*a, **k):
        seen.extend(a[2])
        return real(*a, **k)

    monkeypatch.setattr(engine, "explain_batch", counting)
    second = runner.invoke(app, [*args, "--resume"])
    assert second.exit_code == 1, second.output  # the corrupt file fails again
    assert f"resume: 1 image(s) already in {out}, 3 to do" in second.output
    assert done[0] not in seen and len(seen) == 2
    paths = list(camlens.load_run(out).results["path"])
    assert len(paths) == len(set(paths)) == 3


def test_labels_from_folders_and_target_label(tmp_path):
    from camlens.models.checkpoint import demo_path

    out = tmp_path / "out"
    samples = demo_path() / "samples"
    args = ["explain", str(samples / "*" / "*.png"), "--model", "demo", "--method", "cam"]
    args += ["--labels-from-folders", "--target", "label", "-q", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = camlens.load_run(out).results
    assert len(rows) == 16 and (rows["target"] == rows["true_label"]).all()
    assert int(rows["correct"].sum()) == 15
    page = (out / "report.html").read_text()
    assert "accuracy" in page and "93.8% of 16" in page
    missing = runner.invoke(app, [*args[:6], "--target", "label", "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2
    assert "--target label explains the true class: add --labels-from-folders" in missing.output
    assert not (tmp_path / "o").exists()


def _class_folders(root, folders):
    """Two demo samples in each of ``folders`` below ``root``."""
    from camlens.models.checkpoint import demo_path

    samples = sorted((demo_path() / "samples").glob("*/*.png"))
    for i, folder in enumerate(folders):
        (root / folder).mkdir(parents=True)
        for sample in samples[2 * i : 2 * i + 2]:
            (root / folder / sample.name).write_bytes(sample.read_bytes())
    return root


def test_a_folder_that_is_no_class_is_a_usage_error_unless_mapped(tmp_path):
    data = _class_folders(tmp_path / "data", ["3", "misc", "7"])
    args = ["explain", str(data), "--model", "demo", "--method", "cam", "-q"]
    args += ["--labels-from-folders", "--out", str(tmp_path / "out")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "2 class folder(s) match no class name" not in result.output
    assert "1 class folder(s) match no class name of the model: 'misc'; " in result.output
    assert "--class-map FILE" in result.output and not (tmp_path / "out").exists()
    (tmp_path / "map.csv").write_text("folder,class\nmisc,5\n")
    result = runner.invoke(app, [*args, "--class-map", str(tmp_path / "map.csv")])
    assert result.exit_code == 0, result.output
    rows = camlens.load_run(tmp_path / "out").results
    truth = dict(zip(rows["path"].map(lambda p: p.split("/")[-2]), rows["true_label"]))
    assert truth == {"3": 3, "misc": 5, "7": 7}  # not renumbered 0, 1, 2


def test_target_label_needs_an_input_in_a_class_folder(tmp_path):
    data = _class_folders(tmp_path / "data", ["3"])
    args = ["explain", *map(str, (data / "3").iterdir()), "--model", "demo", "--method", "cam"]
    args += ["--labels-from-folders", "--target", "label", "-q", "--out", str(tmp_path / "out")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--target label: no input is in a class folder" in result.output
    assert not (tmp_path / "out").exists()
    lone = ["explain", str(data), "--model", "demo", "--class-map", str(tmp_path / "m.json")]
    result = runner.invoke(app, [*lone, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "--class-map names the classes of folders: add --labels-from-folders" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "gradcam,nope"], "unknown method 'nope'; valid methods: cam, gradcam"),
        (["--layer", "layer9"], "layer9"),
        (["--colormap", "jte"], "unknown colormap 'jte'; did you mean 'jet'"),
        (["--target", "zebra-cat"], "--target 'zebra-cat' is not 'pred', 'label', a class index"),
        (["--target", "1000"], "--target 1000 is out of range: the model has 1000 classes"),
        (["--alpha", "2"], "--alpha must be in [0, 1], got 2.0"),
        (
            ["--preprocess", "bgr"],
            "--preprocess must be one of auto, imagenet, unit, raw, tf, caffe, got 'bgr'",
        ),
        (["--precision", "fp16"], "--precision must be one of auto, fp32, bf16, int8, got 'fp16'"),
        (["--overlay-format", "gif"], "--overlay-format must be one of jpg, webp, png, got 'gif'"),
    ],
)
def test_usage_errors_exit_2_before_any_work(images, model_args, tmp_path, extra, message):
    out = tmp_path / "out"
    result = runner.invoke(app, ["explain", str(images), *model_args, *extra, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()


def test_bad_model_spec_exit_2(images, model_args, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["explain", str(images), "--model", "resnet", "--out", str(out)])
    assert result.exit_code == 2
    assert "error: unknown model spec 'resnet'; expected torchvision:NAME" in result.output
    assert not out.exists()


def test_default_weights_offline_fails_at_once(images, model_args, tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    out = tmp_path / "out"
    args = ["explain", str(images), "--model", "torchvision:resnet18", "--out", str(out)]
    result = runner.invoke(app, args)  # no --weights: DEFAULT for torchvision models
    assert result.exit_code == 2
    assert "could not download the DEFAULT weights of resnet18" in result.output
    assert "--weights path/to/weights.pth" in result.output
    assert not out.exists()


def test_help_has_examples():
    result = runner.invoke(app, ["explain", "--help"])
    assert result.exit_code == 0
    assert "Examples" in result.output and "--resume" in result.output


def test_torchscript_model_with_layer_methods_is_a_usage_error(images, tmp_path):
    import torch

    torch.jit.script(torchvision.models.resnet18().eval()).save(str(tmp_path / "net.pt"))
    out = tmp_path / "out"
    args = ["explain", str(images), "--model", str(tmp_path / "net.pt"), "--size", "64"]
    result = runner.invoke(app, [*args, "--method", "gradcam", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "is a TorchScript model, which takes no hooks" in result.output
    assert not out.exists()


def test_camlens_checkpoint_gets_its_own_size_scale_and_labels(tmp_path):
    # The bundled demo model is a camlens Classifier: [0, 1] inputs at 64x64, its own labels.
    from pathlib import Path

    samples = Path(camlens.__file__).parent / "data" / "demo" / "samples"
    files = sorted(str(p) for p in samples.glob("*/*.png"))
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["explain", *files, "--model", "demo", "--method", "cam", "-q", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 16
    right = sum(r["predicted_name"] == Path(r["path"]).parent.name for r in records)
    assert right == 15  # the bundled model reads one 6 as a 4
    assert {r["layer"] for r in records} == {"backbone.block5"}


def test_precision_int8_reaches_scorecam(images, model_args, tmp_path, monkeypatch):
    from camlens.backends import torch as backend

    made = []
    real = backend.quantize_int8
    monkeypatch.setattr(backend, "quantize_int8", lambda *a: made.append(a[1].shape) or real(*a))
    out = tmp_path / "out"
    args = [*model_args, "--method", "scorecam,gradcam", "--precision", "int8"]
    result = runner.invoke(app, ["explain", str(images / "chelsea.jpg"), *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    # checked on a blank image before any work, then calibrated on 32 of the 512 masked inputs
    assert made == [(1, 3, 64, 64), (32, 3, 64, 64)]
    assert [line["method"] for line in results(out)] == ["scorecam", "gradcam"]
