"""FullGrad against pytorch-grad-cam 1.5.7's ``FullGrad`` (random-weight resnet18 with random
batch-normalisation statistics), against its formula by hand, and through the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision
from typer.testing import CliRunner

import camlens
from camlens.methods.fullgrad import bias_layers, bias_of

TARGETS = [3, 500]
CHELSEA = Path(__file__).parents[2] / "src" / "camlens" / "data" / "chelsea.jpg"


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    with torch.no_grad():  # batch normalisation whose bias is not just beta
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model, torch.randn(2, 3, 80, 80, generator=torch.Generator().manual_seed(1))


def test_agrees_with_pytorch_grad_cam(resnet):
    from pytorch_grad_cam import FullGrad
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = resnet
    exp = camlens.explain(model, x, method="fullgrad", target=TARGETS)
    with FullGrad(model, []) as reference:
        theirs = torch.from_numpy(
            reference(x, targets=[ClassifierOutputTarget(t) for t in TARGETS])
        )
    assert (exp.maps - theirs).abs().max() < 1e-4
    assert exp.layer == "" and exp.raw.shape == (2, 80, 80)
    # a layer is not FullGrad's to choose (every bias layer is summed): ignored, as saliency's
    again = camlens.explain(model, x, method="fullgrad", target=TARGETS, layer="layer4")
    torch.testing.assert_close(again.maps, exp.maps)


def test_batch_norm_bias_is_the_folded_one(resnet):
    model = resnet[0]
    assert len(bias_layers(model)) == 20  # resnet18's convolutions have no bias
    bn = model.bn1
    folded = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(bias_of(bn), folded.detach())
    # in eval mode, bn(z) = (weight / std) z + folded bias
    z = torch.randn(1, 64, 3, 3)
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps))[None, :, None, None]
    torch.testing.assert_close(bn(z), scale * z + folded[None, :, None, None], atol=1e-6, rtol=0)


def test_formula_by_hand():
    # x -> conv (bias b) -> relu -> mean -> linear: one bias layer
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
    model.eval()
    x = torch.randn(1, 2, 6, 6).requires_grad_()
    out = model(x)
    (grad_x,) = torch.autograd.grad(out[0, 2], x)
    z = conv(x)
    (grad_z,) = torch.autograd.grad(model[1:](z)[0, 2], z)

    def psi(m):
        m = m - m.amin(dim=(2, 3), keepdim=True)
        return m / (m.amax(dim=(2, 3), keepdim=True) + 1e-7)

    expected = psi((x * grad_x).abs()).sum(1) + psi(
        (conv.bias[None, :, None, None] * grad_z).abs()
    ).sum(1)
    exp = camlens.explain(model, x.detach(), method="fullgrad", target=2, normalize=False)
    torch.testing.assert_close(exp.raw, expected.detach())
    torch.testing.assert_close(exp.extra["attribution"], (x * grad_x).detach())


def test_command_line(tmp_path):
    from camlens.cli import app

    args = ["explain", str(CHELSEA), "--model", "torchvision:resnet18", "--weights", "none"]
    args += ["--size", "64", "--method", "fullgrad", "-q", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert any((tmp_path / "out").rglob("*fullgrad*"))


def test_in_place_relus_change_nothing():
    # the gradient kept at a batch normalisation's output is the one reaching it, even where an
    # in-place ReLU rewrites that output afterwards (as in torchvision's ResNets)
    def model(inplace: bool) -> nn.Module:
        torch.manual_seed(0)
        layers = [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=inplace)]
        head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)]
        built = nn.Sequential(*layers, *head).eval()
        with torch.no_grad():
            built[1].running_mean.uniform_(-1, 1)
            built[1].bias.uniform_(-1, 1)
        return built

    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    a = camlens.explain(model(True), x, method="fullgrad", target=1, normalize=False)
    b = camlens.explain(model(False), x, method="fullgrad", target=1, normalize=False)
    torch.testing.assert_close(a.raw, b.raw)
