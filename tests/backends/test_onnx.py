"""The ONNX Runtime adapter: a random ResNet-18 exported to ONNX explains as the PyTorch model.

Layer correspondence: torch's "auto" layer ``layer4`` (the output of the last BasicBlock, its
second ReLU) is the ONNX tensor ``/layer4/layer4.1/relu_1/Relu_output_0`` (torch.onnx.export's
TorchScript exporter names tensors after the modules).
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from needs import need
from typer.testing import CliRunner

import camlens
from camlens.backends.base import ONNX_METHODS
from camlens.cli import app
from camlens.errors import CamlensValueError

need("onnxruntime")
need("onnx")
torchvision = need("torchvision")

LAYER4 = "/layer4/layer4.1/relu_1/Relu_output_0"
#: Small settings: a few masks, big windows, a few channels.
OPTIONS = {
    "scorecam": {"top_k_channels": 16},
    "sscam": {"top_k_channels": 8, "num_samples": 2},
    "iscam": {"top_k_channels": 8, "num_samples": 2},
    "rise": {"num_masks": 16},
    "occlusion": {"window": 32},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random ResNet-18 (10 classes, seed 0, eval) and its ONNX file (dynamic batch, 64 px)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    path = tmp_path_factory.mktemp("onnx") / "resnet18.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 64, 64),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )
    return model, camlens.load_model(path), path


@pytest.fixture
def x():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", ONNX_METHODS)
def test_maps_agree_with_torch(exported, x, method):
    model, onnx_model, _ = exported
    options = OPTIONS.get(method, {})
    ours = camlens.explain(onnx_model, x, method, **options)
    theirs = camlens.explain(model, x, method, **options)
    assert torch.allclose(ours.maps, theirs.maps, atol=1e-4)
    assert torch.allclose(ours.raw, theirs.raw, atol=1e-4, rtol=1e-4)
    assert ours.targets.tolist() == theirs.targets.tolist()
    assert ours.layer == (LAYER4 if theirs.layer == "layer4" else theirs.layer)


def test_logits_and_layers(exported):
    model, onnx_model, _ = exported
    batch = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(onnx_model.logits(batch), model(batch), atol=1e-5)
    infos, auto = camlens.layers(onnx_model, batch)
    assert auto == LAYER4 and camlens.layers(model, batch)[1] == "layer4"
    assert infos[-1].name == LAYER4 and infos[-1].shape == (1, 512, 2, 2)
    assert infos[0].name == "/conv1/Conv_output_0" and infos[0].shape == (1, 64, 32, 32)
    assert {info.kind for info in infos} == {"Conv", "Relu", "MaxPool", "Add"}


def test_gradient_methods_refused(exported, x):
    _, onnx_model, _ = exported
    assert camlens.methods(onnx_model) == [m for m in camlens.methods() if m in ONNX_METHODS]
    assert sorted(ONNX_METHODS) == sorted(camlens.methods(onnx_model))
    with pytest.raises(CamlensValueError) as error:
        camlens.explain(onnx_model, x, "gradcam")
    assert str(error.value) == (
        "method 'gradcam' needs gradients, which camlens does not compute through an ONNX model; "
        "methods that work on ONNX models: eigencam, scorecam, ablationcam, kpcacam, sscam, "
        "iscam, reciprocam, rise, occlusion"
    )
    for precision in ("bf16", "int8"):
        with pytest.raises(CamlensValueError, match="ONNX Runtime runs this model in float32"):
            camlens.explain(onnx_model, x, "scorecam", precision=precision, top_k_channels=2)


def test_bad_files_refused(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07\x12\x04junk" + bytes(range(256)))
    with pytest.raises(CamlensValueError, match=r"bad.onnx' is not a valid ONNX model \("):
        camlens.load_model(bad)
    with pytest.raises(CamlensValueError, match="does not exist"):
        camlens.load_model(tmp_path / "missing.onnx")
    result = CliRunner().invoke(app, ["layers", "--model", str(bad)])
    assert result.exit_code == 2 and "is not a valid ONNX model" in result.output
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random CNN (8 channels, 3 classes) exported for a fixed 32 px input."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 3),
    ).eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 32, 32),),
            str(path),
            dynamo=False,
            dynamic_axes={"input": {0: "batch"}},
            input_names=["input"],
        )
    return path


def test_session_from_an_onnx_file(tiny):
    from camlens.runs.session import Session

    session = Session.from_spec(str(tiny))
    assert session.size == 32 and session.classes == 3 and session.prepare.name == "imagenet"
    assert session.usable(camlens.methods()) == list(camlens.methods(session.adapter))
    assert session.notes[-1].startswith("--method all skips cam, gradcam, gradcam++,")
    assert session.notes[-1].endswith(
        "legrad: they need gradients (or a PyTorch model's attention layers), which an ONNX "
        "model does not give camlens"
    )
    with pytest.raises(CamlensValueError, match="ONNX Runtime runs this model in float32"):
        session.check(["scorecam"], precision="bf16")
    with pytest.raises(CamlensValueError, match="drop --weights"):
        Session.from_spec(str(tiny), "w.pth")


def test_cli_explains_and_lists_layers(tiny, tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 90)).save(folder / "red.png")
    out = tmp_path / "run"
    args = ["explain", str(folder), "--model", str(tiny), "--method", "scorecam", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert row["method"] == "scorecam" and row["error"] is None
    assert row["layer"] == "/3/Relu_output_0"
    result = CliRunner().invoke(app, ["layers", "--model", str(tiny)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "auto: /3/Relu_output_0"
    assert [line[2:].split()[0] for line in result.output.splitlines()[1:-1]] == [
        "/0/Conv_output_0",
        "/1/Relu_output_0",
        "/2/Conv_output_0",
        "/3/Relu_output_0",
    ]
