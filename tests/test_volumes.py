"""Clips and volumes (B, C, T, H, W): maps (B, T, H, W), upsampled trilinearly and min-max scaled
per clip, for every method; torchvision's video ResNets and a one-channel 3-D network, checked
against float64 references."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import camlens


class Tiny3D(nn.Module):
    """A one-channel 3-D CNN ending in global average pooling and a linear layer (medical)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2), nn.Conv3d(6, 8, 3, padding=1)
        )
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.relu(self.features(x)).mean(dim=(2, 3, 4)))


@pytest.fixture(scope="module")
def tiny3d():
    torch.manual_seed(0)
    return Tiny3D().eval()


def _volume(shape=(2, 1, 8, 16, 16)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _shown(raw: torch.Tensor, size) -> torch.Tensor:
    """ReLU, trilinear upsampling, min-max per clip: the float64 reference of maps."""
    up = F.interpolate(raw.clamp_min(0)[:, None], size=size, mode="trilinear")[:, 0]
    low = up.amin(dim=(1, 2, 3), keepdim=True)
    return (up - low) / (up.amax(dim=(1, 2, 3), keepdim=True) - low)


def _capture64(model, layer, x, target):
    """Activations, their gradients and logits of a float64 copy of ``model``."""
    model = copy.deepcopy(model).double()
    kept = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, a, out: kept.update(a=out))
    try:
        logits = model(x.double())
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logits[torch.arange(x.shape[0]), target].sum(), kept["a"])
    return kept["a"].detach(), grad, logits.detach()


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "layercam", "cam"])
def test_tiny3d_matches_float64_reference(tiny3d, method):
    x, target = _volume(), torch.tensor([0, 2])
    exp = camlens.explain(tiny3d, x, method, target=target.tolist())
    a, g, logits = _capture64(tiny3d, "relu", x, target)
    raw = {
        "gradcam": (g.mean(dim=(2, 3, 4), keepdim=True) * a).sum(1),
        "hirescam": (g * a).sum(1),
        "layercam": (g.clamp_min(0) * a).sum(1),
        "cam": torch.einsum("bcthw,bc->bthw", a, tiny3d.fc.weight.double()[target]),
    }[method]
    assert exp.layer == "relu" and exp.raw.shape == (2, 4, 8, 8)
    torch.testing.assert_close(exp.raw.double(), raw, rtol=1e-4, atol=1e-6)
    assert exp.maps.shape == (2, 8, 16, 16)
    assert (exp.maps.double() - _shown(raw, (8, 16, 16))).abs().max() < 1e-5
    torch.testing.assert_close(exp.scores.double(), logits[[0, 1], target], rtol=1e-5, atol=1e-6)
    if method == "cam":  # CAM's identity: the mean of raw over locations is the logit minus bias
        bias = tiny3d.fc.bias.double()[target]
        torch.testing.assert_close(
            exp.raw.double().mean(dim=(1, 2, 3)), logits[[0, 1], target] - bias
        )


def test_saliency_is_the_volume_gradient(tiny3d):
    x = _volume()
    exp = camlens.explain(tiny3d, x, "saliency", target=1)
    x64 = x.double().requires_grad_()
    (grad,) = torch.autograd.grad(copy.deepcopy(tiny3d).double()(x64)[:, 1].sum(), x64)
    torch.testing.assert_close(exp.raw.double(), grad.abs().amax(dim=1), rtol=1e-4, atol=1e-7)


def test_every_method_gives_clip_maps(tiny3d):
    x = _volume((1, 1, 6, 12, 12))
    for method in camlens.methods(tiny3d):
        exp = camlens.explain(tiny3d, x, method)
        assert exp.maps.shape == (1, 6, 12, 12), method
        assert exp.maps.amin() == 0 and exp.maps.amax() == 1, method


@pytest.mark.parametrize("arch", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_video_resnets(arch):
    torch.manual_seed(0)
    model = getattr(torchvision.models.video, arch)(num_classes=4).eval()
    x = torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    exp = camlens.explain(model, x, "gradcam", target=2)
    assert exp.layer == "layer4" and exp.maps.shape == (1, 4, 32, 32)
    if arch == "r3d_18":
        a, g, _ = _capture64(model, "layer4", x, torch.tensor([2]))
        raw = (g.mean(dim=(2, 3, 4), keepdim=True) * a).sum(1)
        torch.testing.assert_close(exp.raw.double(), raw, rtol=1e-4, atol=1e-6)
        assert (exp.maps.double() - _shown(raw, (4, 32, 32))).abs().max() < 1e-5


def test_errors_name_the_shape(tiny3d):
    with pytest.raises(camlens.CamlensValueError) as error:
        camlens.explain(tiny3d, _volume()[0, 0])
    assert str(error.value) == (
        "expected x of shape (B, C, H, W), or (B, C, T, H, W) for clips and volumes, got "
        "(8, 16, 16); add a batch dimension with x[None]"
    )
    with pytest.raises(camlens.CamlensValueError) as error:
        camlens.explain(tiny3d, _volume(), augment=True)
    assert str(error.value) == (
        "augment=True flips and rescales images, got a clip or volume of shape (2, 1, 8, 16, 16); "
        "drop augment"
    )
