"""What the command line feeds a model (camlens/preprocessing.py): each mode's formula, and what
``auto`` picks for each kind of model. The keras.applications functions are compared in
tests/backends/keras_cases.py."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from camlens.errors import CamlensValueError
from camlens.images.preprocessing import MODES, Preprocess, resolve
from camlens.models.checkpoint import load_model

PIXEL = torch.tensor([1.0, 0.5, 0.0])[None, :, None, None]  # one RGB pixel (B, C, H, W)


@pytest.mark.parametrize(
    "mode, want",
    [
        ("unit", [1.0, 0.5, 0.0]),
        ("raw", [255.0, 127.5, 0.0]),
        ("tf", [1.0, 0.0, -1.0]),
        # BGR: (0, 127.5, 255) minus the BGR means
        ("caffe", [-103.939, 127.5 - 116.779, 255.0 - 123.68]),
        ("imagenet", [(1 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0 - 0.406) / 0.225]),
    ],
)
def test_each_mode_formula(mode, want):
    got = resolve(mode, "torchvision:resnet18", None)(PIXEL)
    torch.testing.assert_close(got[0, :, 0, 0], torch.tensor(want))


def test_auto_follows_the_model():
    assert resolve("auto", "torchvision:resnet18", torchvision.models.resnet18()).name == "imagenet"
    assert resolve("auto", "demo", load_model("demo")).name.startswith("unit")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2)
    chosen = resolve("auto", "timm:vit_tiny_patch16_224", vit)
    assert chosen.name == "the model's mean (0.5, 0.5, 0.5) and std (0.5, 0.5, 0.5)"
    torch.testing.assert_close(chosen(PIXEL)[0, :, 0, 0], torch.tensor([1.0, 0.0, -1.0]))
    keras_file = resolve("auto", "digits.keras", None)
    assert keras_file.name == "unit" and "--preprocess raw|tf|caffe|imagenet" in keras_file.note
    assert resolve("imagenet", "digits.keras", None).note is None


def test_one_channel_models_get_the_mean_of_rgb():
    x = torch.rand(2, 3, 5, 5)
    gray = Preprocess("raw", lambda t: t * 255.0, channels=1)(x)
    assert gray.shape == (2, 1, 5, 5)
    torch.testing.assert_close(gray, x.mean(dim=1, keepdim=True) * 255.0)


def test_unknown_mode():
    message = f"--preprocess must be one of {', '.join(MODES)}, got 'bgr'"
    with pytest.raises(CamlensValueError, match=message.replace("(", r"\(")):
        resolve("bgr", "torchvision:resnet18", None)
