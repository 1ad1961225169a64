"""Session: a model spec resolved once (model, input, names, targets) and checked early."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torchvision

import camlens
from camlens.errors import CamlensValueError
from camlens.runs.session import Session, channels_last, device_for, method_names


@pytest.fixture(scope="module")
def resnet() -> Session:
    torch.manual_seed(0)
    return Session.from_spec("torchvision:resnet18", "none", size=64)


def test_torchvision_session(resnet):
    assert (resnet.size, resnet.classes, resnet.device.type) == (64, 1000, "cpu")
    assert resnet.prepare.name == "imagenet" and resnet.names[281] == "tabby"
    image = np.full((30, 50, 3), 255, np.uint8)
    x = resnet.to_input([image, image])
    white = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert x.shape == (2, 3, 64, 64) and torch.allclose(x[1, :, 5, 7], white, atol=1e-6)
    predicted, probability = resnet.predict(x)
    logits = resnet.model(x)
    assert torch.equal(predicted, logits.argmax(1))
    assert torch.allclose(probability, logits.softmax(1).amax(1), atol=1e-6)


def test_demo_checkpoint_session_gets_its_own_input():
    session = Session.from_spec("demo")
    assert (session.size, session.classes) == (64, 10)
    assert session.prepare.name.startswith("unit") and session.names[3] == "3"
    x = session.to_input([np.zeros((20, 20, 3), np.uint8)])
    assert x.shape == (1, 3, 64, 64) and float(x.abs().max()) == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [("pred", None), (None, None), ("label", "label"), ("281", 281), ("Tabby", 281), (7, 7)],
)
def test_targets(resnet, text, expected):
    assert resnet.target(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("zebra-cat", "--target 'zebra-cat' is not 'pred', 'label', a class index or a class name"),
        ("1000", "--target 1000 is out of range: the model has 1000 classes (0..999)"),
        ("-1", "--target -1 is out of range"),
    ],
)
def test_bad_targets(resnet, text, message):
    with pytest.raises(CamlensValueError, match="^" + re.escape(message)):
        resnet.target(text)


def test_checks_before_any_work(resnet):
    resnet.check(["gradcam", "saliency"])
    with pytest.raises(CamlensValueError, match="layer9"):
        resnet.check(["gradcam"], layer="layer9")
    resnet.check(["saliency"], layer="layer9")  # pixel-space methods take no layer
    with pytest.raises(CamlensValueError, match="--precision must be one of auto, fp32, bf16"):
        resnet.check(["scorecam"], precision="fp16")


def test_explainers_are_shared_per_method_layer_and_precision(resnet):
    first = resnet.explainer("gradcam")
    assert resnet.explainer("gradcam") is first
    assert resnet.explainer("gradcam", layer="layer3") is not first
    assert first.adapter is resnet.adapter


def test_method_names():
    assert method_names("gradcam, Grad-CAM++ ,gradcam") == ["gradcam", "gradcam++"]
    assert method_names("all") == camlens.methods()
    with pytest.raises(CamlensValueError, match=r"^--method is empty"):
        method_names(" , ")
    with pytest.raises(CamlensValueError, match=r"^unknown method 'nope'; valid methods: cam,"):
        method_names("nope")


def test_devices():
    assert device_for("cpu") == torch.device("cpu")
    with pytest.raises(CamlensValueError, match=r"^--device 'gpu0' is not a device name"):
        device_for("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(CamlensValueError, match="torch sees no CUDA GPU; use --device cpu"):
            device_for("cuda")


def test_bad_preprocess_is_found_before_the_model_loads(monkeypatch):
    monkeypatch.setattr(torchvision.models, "get_model", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(CamlensValueError, match=r"^--preprocess must be one of auto, imagenet"):
        Session.from_spec("torchvision:resnet18", preprocess="bgr")


def test_random_weights_are_drawn_from_the_seed_and_leave_the_callers_rng_alone():
    def state(spec: str, seed: int) -> dict[str, torch.Tensor]:
        return Session.from_spec(spec, "none", size=64, seed=seed).model.state_dict()

    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    first, again = state("torchvision:resnet18", 0), state("torchvision.models:resnet18", 0)
    assert torch.equal(torch.rand(3), expected)  # the caller's generator is where it was
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = state("torchvision:resnet18", 1)
    assert not torch.equal(first["fc.weight"], other["fc.weight"])
    default = Session.from_spec("torchvision:resnet18", "none", size=64)
    assert torch.equal(default.model.state_dict()["fc.weight"], first["fc.weight"])
    assert (default.weights, default.seed) == ("none", 0)


def test_cnns_it_loads_run_channels_last_with_the_contiguous_models_maps(resnet):
    """A CNN the session loads itself runs in channels-last memory format (faster
    convolutions); its maps equal the contiguous model's. A user's model and a ViT stay as
    they are."""
    assert resnet.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    plain = torchvision.models.resnet18().eval()
    plain.load_state_dict(resnet.model.state_dict())
    assert not plain.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for method in ("gradcam", "eigencam"):
        ours = camlens.explain(resnet.model, x, method=method, target=3)
        theirs = camlens.explain(plain, x, method=method, target=3)
        assert np.abs(np.asarray(ours.maps) - np.asarray(theirs.maps)).max() < 2e-5
    Session.from_model(plain, size=64)
    assert not plain.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    patches = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, 4), torch.nn.Flatten(2))
    assert channels_last(patches, torch.device("cpu")).state_dict()["0.weight"].is_contiguous()
