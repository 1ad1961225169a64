"""The tutorials under docs/examples run, with random weights (nothing is downloaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
CAT = ROOT / "src" / "camlens" / "data" / "chelsea.jpg"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_t2_resnet18_cam(tmp_path):
    torch.manual_seed(0)
    exp = load("t2_resnet18_cam").main(str(CAT), weights=None, out=str(tmp_path / "cam.png"))
    assert exp.layer == "layer4" and exp.raw.shape == (1, 7, 7) and exp.targets.tolist() == [282]
    assert exp.maps.shape == (1, 224, 224)
    # the CAM identity: the mean of the map is the class logit minus the bias
    torch.manual_seed(0)
    import torchvision

    model = torchvision.models.resnet18().eval()
    import camlens

    x, crops = camlens.load_images([CAT])
    logit = model(x)[0, 282].item() - model.fc.bias[282].item()
    assert abs(exp.raw.mean().item() - logit) < 1e-4
    picture = np.asarray(Image.open(tmp_path / "cam.png"))
    assert picture.shape == crops[0].shape == (262, 262, 3)  # the crop at the photo's resolution
