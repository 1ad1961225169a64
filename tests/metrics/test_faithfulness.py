"""Deletion, insertion, Average Drop and Increase in Confidence against plain reference loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from torchvision.transforms.functional import gaussian_blur

import camlens
from camlens import metrics
from camlens.backends.quantize import int8_supported
from camlens.errors import CamlensValueError


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=generator)
    maps = torch.rand(2, 32, 32, generator=generator)
    maps[1, :8, :8] = 0.5  # ties, broken by pixel index
    return x, maps


def reference_curve(model, image, heat, cls, steps, start, end):
    """One image, one forward per step: ``end`` at the k * N // steps top pixels."""
    pixels = heat.numel()
    order = sorted(range(pixels), key=lambda i: (-float(heat.reshape(-1)[i]), i))
    curve = []
    for k in range(steps + 1):
        chosen = torch.zeros(pixels, dtype=torch.bool)
        chosen[order[: k * pixels // steps]] = True
        mixed = torch.where(chosen.reshape(heat.shape), end, start)
        with torch.no_grad():
            curve.append(float(model(mixed[None]).softmax(dim=1)[0, cls]))
    return np.array(curve)


def trapezoid(curve: np.ndarray) -> float:
    return float(np.sum((curve[1:] + curve[:-1]) / 2)) / (len(curve) - 1)


@pytest.mark.parametrize(
    ("metric", "baseline"), [("deletion", "zero"), ("insertion", "blur"), ("deletion", "mean")]
)
def test_deletion_and_insertion_equal_an_unbatched_loop(resnet, batch, metric, baseline):
    x, maps = batch
    steps = 6
    classes = resnet(x).argmax(dim=1)
    fills = {
        "zero": torch.zeros_like(x),
        "blur": gaussian_blur(x, [11, 11], [5.0, 5.0]),
        "mean": x.mean(dim=(0, 2, 3), keepdim=True).expand_as(x),
    }[baseline]
    function = getattr(metrics, metric)
    aucs, curves = function(
        resnet, x, maps, steps=steps, baseline=baseline, batch_size=5, return_curves=True
    )
    assert aucs.shape == (2,) and curves.shape == (2, steps + 1)
    for i in range(2):
        start, end = (x[i], fills[i]) if metric == "deletion" else (fills[i], x[i])
        want = reference_curve(resnet, start, maps[i], classes[i], steps, start, end)
        np.testing.assert_allclose(curves[i].numpy(), want, atol=1e-5)
        assert float(aucs[i]) == pytest.approx(trapezoid(want), abs=1e-5)


def test_curves_run_from_the_intact_to_the_fully_changed_image(resnet, batch):
    x, maps = batch
    probs = resnet(x).softmax(dim=1).amax(dim=1)
    _, curves = metrics.deletion(resnet, x, maps, steps=4, return_curves=True)
    np.testing.assert_allclose(curves[:, 0], probs.detach(), atol=1e-6)
    blank = resnet(torch.zeros_like(x)).softmax(dim=1)
    np.testing.assert_allclose(
        curves[:, -1], blank.gather(1, resnet(x).argmax(1)[:, None])[:, 0].detach(), atol=1e-6
    )
    _, curves = metrics.insertion(resnet, x, maps, steps=4, return_curves=True)
    np.testing.assert_allclose(curves[:, -1], probs.detach(), atol=1e-6)


class MeanModel(nn.Module):
    """Logits (mean of the image, 0): class 0's probability is sigmoid(mean)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3))
        return torch.stack([mean, torch.zeros_like(mean)], dim=1)


def test_deletion_golden_numbers_on_a_hand_made_model():
    x = torch.ones(1, 1, 4, 4)
    maps = torch.arange(16.0).reshape(1, 4, 4)
    auc, curve = metrics.deletion(MeanModel(), x, maps, target=0, steps=4, return_curves=True)
    sigmoid = [1 / (1 + math.exp(-(1 - k / 4))) for k in range(5)]
    np.testing.assert_allclose(curve[0].numpy(), sigmoid, atol=1e-6)
    assert float(auc[0]) == pytest.approx(trapezoid(np.array(sigmoid)), abs=1e-6)
    # the 4 most relevant pixels (the bottom row) go first
    _, curve = metrics.deletion(
        MeanModel(),
        torch.arange(16.0).reshape(1, 1, 4, 4),
        maps,
        target=0,
        steps=4,
        return_curves=True,
    )
    means = [7.5, (7.5 * 16 - (12 + 13 + 14 + 15)) / 16]
    np.testing.assert_allclose(curve[0, :2].numpy(), [1 / (1 + math.exp(-m)) for m in means])


def test_ties_are_broken_by_pixel_index():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    _, curve = metrics.deletion(
        MeanModel(), x, torch.zeros(1, 4, 4), target=0, steps=2, return_curves=True
    )
    # a constant map: pixels 0..7 (the top half, values 0..7) go first
    assert float(curve[0, 1]) == pytest.approx(1 / (1 + math.exp(-(8 + 15) / 2 * 8 / 16)))


def test_an_explanation_brings_its_maps_and_targets(resnet, batch):
    x, _ = batch
    exp = camlens.explain(resnet, x, method="gradcam", target=[3, 7])
    from_exp = metrics.deletion(resnet, x, exp, steps=3)
    explicit = metrics.deletion(resnet, x, exp.maps, target=[3, 7], steps=3)
    torch.testing.assert_close(from_exp, explicit)


def test_average_drop_and_increase_in_confidence(resnet, batch):
    x, maps = batch
    logits = resnet(x).detach()
    cls = logits.argmax(dim=1)
    y = logits.softmax(dim=1).gather(1, cls[:, None])[:, 0]
    masked = resnet(x * maps[:, None]).detach().softmax(dim=1).gather(1, cls[:, None])[:, 0]
    drop = metrics.average_drop(resnet, x, maps)
    rise = metrics.increase_in_confidence(resnet, x, maps)
    torch.testing.assert_close(drop, (y - masked).clamp_min(0) / y, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(rise, (masked > y).float())
    # the map of ones changes nothing: no drop, no increase
    ones = torch.ones_like(maps)
    assert metrics.average_drop(resnet, x, ones).abs().max() < 1e-6
    assert metrics.increase_in_confidence(resnet, x, ones).sum() == 0


def test_auc_is_the_trapezoid_rule_over_steps():
    curves = torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.2, 0.2]])
    torch.testing.assert_close(metrics.auc(curves), torch.tensor([0.5, 0.2]))


def test_errors_name_the_argument(resnet, batch):
    x, maps = batch
    with pytest.raises(
        CamlensValueError, match=r"expected maps of shape \(B, H, W\) = \(2, 32, 32\)"
    ):
        metrics.deletion(resnet, x, maps[:, :10])
    with pytest.raises(CamlensValueError, match="baseline must be one of zero, blur, mean"):
        metrics.deletion(resnet, x, maps, baseline="noise")
    with pytest.raises(CamlensValueError, match=r"steps must be an int between 1 and .* \(1024\)"):
        metrics.insertion(resnet, x, maps, steps=0)
    with pytest.raises(CamlensValueError, match="batch_size must be a positive int"):
        metrics.deletion(resnet, x, maps, batch_size=0)


@pytest.mark.skipif(not int8_supported(), reason="no x86 int8 engine in this build")
def test_int8_curves_stay_close_to_fp32(resnet, batch):
    x, maps = batch
    for metric in (metrics.deletion, metrics.insertion):
        exact, exact_curves = metric(resnet, x, maps, steps=8, return_curves=True)
        fast, fast_curves = metric(resnet, x, maps, steps=8, return_curves=True, precision="int8")
        assert float((fast - exact).abs().max()) < 2e-3  # probabilities about 0.1: 2% of them
        assert 0 < float((fast_curves - exact_curves).abs().max()) < 5e-3
    with pytest.raises(
        CamlensValueError, match="precision must be one of fp32, bf16, int8, got 'fp16'"
    ):
        metrics.deletion(resnet, x, maps, precision="fp16")


@pytest.mark.skipif(not int8_supported(), reason="no x86 int8 engine in this build")
def test_int8_warns_when_its_calibration_check_shows_a_large_gap(digit_model):
    # a confident 3-conv model on 16x16 digits: int8 moves its probabilities by about 0.08
    model, images, _ = digit_model
    x = images[:8]
    exp = camlens.explain(model, x, method="gradcam", layer="conv3")
    state = {name: value.clone() for name, value in model.state_dict().items()}
    exact, exact_curves = metrics.deletion(model, x, exp, steps=16, return_curves=True)
    with pytest.warns(camlens.CamlensWarning) as caught:
        fast, fast_curves = metrics.deletion(
            model, x, exp, steps=16, return_curves=True, precision="int8"
        )
    message = str(caught[0].message)
    gap = float(message.split("by up to ")[1].split(" ")[0])
    assert message == (
        f"precision='int8' moves DigitNet's class probabilities by up to {gap:.3f} on the "
        "calibration images (more than 0.05); the results are approximate: use "
        "precision='fp32' for exact ones"
    )
    # the calibration images predict the error of the whole curve
    curve_gap = float((fast_curves - exact_curves).abs().max())
    assert gap > 0.05 and curve_gap < 1.5 * gap
    assert float((fast - exact).abs().max()) < 0.03
    assert all(torch.equal(state[name], value) for name, value in model.state_dict().items())
