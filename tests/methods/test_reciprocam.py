"""Recipro-CAM against its formula in float64, and on ResNet-18."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from needs import need

import camlens
from camlens.methods.masking import location_masks


class ConvGapLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return ConvGapLinear().eval(), torch.randn(3, 3, 10, 10)


@pytest.mark.parametrize("mask", ["spatial", "gaussian"])
def test_matches_the_formula_in_float64(tiny, mask):
    """L_ij = y^c(head(A ⊙ M^ij)), the head (GAP + linear) run in float64 on every masked copy."""
    model, x = tiny
    exp = camlens.explain(model, x, method="reciprocam", layer="conv", target=[0, 2, 3], mask=mask)
    with torch.no_grad():
        features = model.conv(x).double()  # (3, 5, 5, 5)
    masks = location_masks((5, 5), mask).double()  # (25, 5, 5)
    weight, bias = model.fc.weight.double(), model.fc.bias.double()
    for image, target in enumerate([0, 2, 3]):
        masked = features[image][None] * masks[:, None]  # (25, 5, 5, 5)
        scores = masked.mean(dim=(2, 3)) @ weight[target] + bias[target]
        assert torch.allclose(exp.raw[image].double(), scores.reshape(5, 5), atol=1e-5)


def test_spatial_mask_on_gap_linear_is_cam_plus_a_constant(tiny):
    model, x = tiny
    raw = camlens.explain(model, x, method="reciprocam", layer="conv", target=1, relu=False).raw
    with torch.no_grad():
        features = model.conv(x)
    closed = torch.einsum("k,bkij->bij", model.fc.weight[1], features) / 25 + model.fc.bias[1]
    assert torch.allclose(raw, closed.detach(), atol=1e-5)
    cam = camlens.explain(model, x, method="cam", layer="conv", target=1, relu=False).raw
    assert torch.allclose(raw - model.fc.bias[1].item(), cam / 25, atol=1e-5)


def test_gaussian_masks_are_the_papers_kernel():
    masks = location_masks((3, 3), "gaussian")
    assert torch.allclose(masks[4], torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16.0)
    assert torch.equal(location_masks((2, 2), "spatial"), torch.eye(4).reshape(4, 2, 2))


def test_resnet18_sane_and_batch_size_free():
    torch.manual_seed(0)
    model = need("torchvision").models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    exp = camlens.explain(model, x, method="reciprocam", target=[3, 7])
    assert exp.layer == "layer4" and exp.raw.shape == (2, 2, 2) and exp.maps.shape == (2, 64, 64)
    one = camlens.explain(model, x, method="reciprocam", target=[3, 7], batch_size=1)
    assert torch.allclose(exp.raw, one.raw, atol=1e-5)
    # location (0, 0) alone: the same forward done by hand with a hook on layer4
    keep = torch.zeros(2, 2)
    keep[0, 0] = 1
    handle = model.layer4.register_forward_hook(lambda m, i, o: o * keep)
    with torch.no_grad():
        expected = model(x)[[0, 1], [3, 7]]
    handle.remove()
    assert torch.allclose(exp.raw[:, 0, 0], expected, atol=1e-4)


def test_mask_is_checked(tiny):
    with pytest.raises(camlens.CamlensValueError, match="mask must be one of spatial, gaussian"):
        camlens.ReciproCAM(tiny[0], mask="box")
