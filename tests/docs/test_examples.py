"""The tutorials under docs/examples run, with random weights (nothing is downloaded).

The Keras tutorials (T1, T3, T4) are checked by ``keras_examples.py`` in one child ``pytest`` with
``KERAS_BACKEND=tensorflow`` (Keras fixes its backend once per process); the PyTorch ones here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
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


def test_t5_resnet18_cats_dogs(tmp_path):
    import skimage.data
    from torchvision.transforms import functional as TF

    photos = {
        "cat.0.jpg": Image.open(CAT),
        "cat.1.jpg": Image.fromarray(skimage.data.chelsea()).transpose(Image.FLIP_LEFT_RIGHT),
        "dog.0.jpg": Image.fromarray(skimage.data.astronaut()),
        "dog.1.jpg": Image.fromarray(skimage.data.coffee()),
    }
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    for name, photo in photos.items():
        photo.convert("RGB").resize((80, 64)).save(tmp_path / "train" / name)
    photos["cat.0.jpg"].convert("RGB").resize((120, 90)).save(tmp_path / "test" / "cat.7.jpg")
    torch.manual_seed(0)
    model, exp, saved = load("t5_resnet18_cats_dogs").main(
        str(tmp_path / "train"), str(tmp_path / "test"), out=str(tmp_path / "results"), size=64
    )
    assert exp.layer == "layer4" and exp.raw.shape == (1, 2, 2) and exp.maps.shape == (1, 64, 64)
    # the CAM identity: the mean of the raw map is the class logit minus the bias
    with Image.open(tmp_path / "test" / "cat.7.jpg") as test:
        x = TF.to_tensor(test.resize((64, 64)))[None]
    with torch.no_grad():
        logits = model(x)[0]
    idx = int(logits.argmax())
    assert exp.targets.tolist() == [idx]
    # float32 rounding: a few ulps of the logit (a briefly trained random ResNet's logits can be
    # about 3e4, where one ulp is 0.004)
    ulps = 8 * torch.finfo(torch.float32).eps * abs(logits[idx].item())
    assert abs(exp.raw.mean().item() - (logits[idx] - model.fc.bias[idx]).item()) < max(1e-4, ulps)
    assert abs(exp.probs[0].item() - logits.softmax(0)[idx].item()) < 1e-6
    # relu=False: the signed map, upsampled, min-max scaled (the tutorial's cam - min, / max)
    up = torch.nn.functional.interpolate(exp.raw[None], size=(64, 64), mode="bilinear")[0, 0]
    assert torch.allclose(exp.maps[0], (up - up.min()) / (up.max() - up.min()), atol=1e-5)
    name = ("cat", "dog")[idx]
    assert [p.name for p in saved] == [f"cat.7_{name}.png"]
    with Image.open(saved[0]) as picture:
        assert picture.size == (120, 90)  # the original image's size, not the model's 64 x 64
        assert (np.asarray(picture)[:4, :4] == 0).all()  # the label's dark band


def test_keras_tutorials():
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("tensorflow") is None:
        pytest.skip("keras and tensorflow are not installed (pip install -e '.[test]')")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    cases = Path(__file__).with_name("keras_examples.py")
    command = [sys.executable, "-m", "pytest", str(cases), "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-8000:]
    assert "4 passed" in report and "skipped" not in report, report[-2000:]
