"""Models with several inputs: model(*x) for a tuple, model(**x) for a dict, the image found or
named by ``image=``; maps checked against a float64 reference."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import camlens
from camlens.backends.inputs import Inputs, as_inputs


class ImageAndMetadata(nn.Module):
    """A ResNet-18 on the image plus a linear layer on metadata, summed into the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = torchvision.models.resnet18(num_classes=5)
        self.meta = nn.Linear(4, 5)

    def forward(self, image, meta):
        return self.cnn(image) + self.meta(meta)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ImageAndMetadata().eval()


def _batch():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 64, 64, generator=generator), torch.randn(2, 4, generator=generator)


def _gradcam_float64(model, image, meta, target):
    """Grad-CAM at cnn.layer4 in float64: mean gradient weights, ReLU, bilinear, min-max."""
    model = copy.deepcopy(model).double()
    kept = {}
    handle = model.cnn.layer4.register_forward_hook(lambda m, a, out: kept.update(a=out))
    try:
        logits = model(image.double(), meta.double())
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logits[torch.arange(2), target].sum(), kept["a"])
    cam = (grad.mean(dim=(2, 3), keepdim=True) * kept["a"]).sum(dim=1).clamp_min(0)
    cam = F.interpolate(cam[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    low = cam.amin(dim=(1, 2), keepdim=True)
    return ((cam - low) / (cam.amax(dim=(1, 2), keepdim=True) - low)).detach(), logits.detach()


def test_tuple_and_dict_match_a_float64_reference(model):
    image, meta = _batch()
    exp = camlens.explain(model, (image, meta), "gradcam", target=[1, 3])
    reference, logits = _gradcam_float64(model, image, meta, torch.tensor([1, 3]))
    assert exp.layer == "cnn.layer4"
    assert (exp.maps.double() - reference).abs().max() < 1e-4
    torch.testing.assert_close(exp.scores.double(), logits[[0, 1], [1, 3]], rtol=1e-5, atol=1e-5)
    named = camlens.explain(model, {"meta": meta, "image": image}, "gradcam", target=[1, 3])
    torch.testing.assert_close(named.maps, exp.maps)
    # image= names the explained input
    by_key = camlens.GradCAM(model, image="image")({"meta": meta, "image": image}, target=[1, 3])
    torch.testing.assert_close(by_key.maps, exp.maps)


def test_saliency_is_the_image_gradient(model):
    image, meta = _batch()
    exp = camlens.explain(model, (image, meta), "saliency", target=[0, 2])
    x = image.double().requires_grad_()
    logits = copy.deepcopy(model).double()(x, meta.double())
    (grad,) = torch.autograd.grad(logits[[0, 1], [0, 2]].sum(), x)
    torch.testing.assert_close(exp.raw.double(), grad.abs().amax(dim=1), rtol=1e-4, atol=1e-6)
    infos, auto = camlens.layers(model, (image, meta))
    assert auto == "cnn.layer4" and infos[-1].shape == (1, 512, 2, 2)


def test_as_inputs():
    image, meta = _batch()
    found = as_inputs((meta, image))
    assert isinstance(found, Inputs) and found.key == 1 and found.image is image
    assert as_inputs(image) is image
    sliced = found[:1]
    assert sliced.values[0].shape == (1, 4) and sliced.image.shape == (1, 3, 64, 64)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda m, image, meta: camlens.explain(m, (meta, meta.long())),
            "x holds no image: expected a float tensor of shape (B, C, H, W) or (B, C, T, H, W) "
            "among the inputs, got Tensor of shape (2, 4) and dtype torch.float32, Tensor of "
            "shape (2, 4) and dtype torch.int64",
        ),
        (
            lambda m, image, meta: camlens.explain(m, (image, meta), image=2),
            "image=2 is not one of the inputs; expected one of [0, 1]",
        ),
        (
            lambda m, image, meta: camlens.explain(m, image, image=0),
            "image=0 names one of several inputs, but x is Tensor of shape (2, 3, 64, 64) and "
            "dtype torch.float32; pass x as a tuple or dict of inputs",
        ),
        (
            lambda m, image, meta: camlens.explain(m, (image, meta), "scorecam"),
            "scorecam runs the model on altered copies of the image, which camlens does not do "
            "for several inputs (x has 2); use a gradient method such as 'gradcam', 'eigencam' "
            "or 'saliency'",
        ),
        (
            lambda m, image, meta: camlens.explain(m, (image, meta), "gradcam", smooth=4),
            "smooth=N runs the model on altered copies of the image, which camlens does not do "
            "for several inputs (x has 2); use a gradient method such as 'gradcam', 'eigencam' "
            "or 'saliency'",
        ),
    ],
)
def test_errors(model, call, message):
    image, meta = _batch()
    with pytest.raises(camlens.CamlensError) as error:
        call(model, image, meta)
    assert str(error.value) == message
