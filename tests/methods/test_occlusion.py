"""Occlusion against Captum's ``Occlusion``, and its windows."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from needs import need

import camlens
from camlens.backends.quantize import int8_supported
from camlens.methods.occlusion import windows


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return need("torchvision").models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 64, 64)


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    scale = float(b.abs().max()) or 1.0
    return float((a.detach() - b.detach()).abs().max()) <= tol * scale


@pytest.mark.parametrize(("window", "stride", "baseline"), [(16, 8, 0.0), (24, (12, 20), 0.5)])
def test_occlusion_matches_captum(resnet, x, window, stride, baseline):
    captum_attr = need("captum.attr")
    targets = [3, 7]
    exp = camlens.explain(
        resnet,
        x,
        method="occlusion",
        target=targets,
        window=window,
        stride=stride,
        baseline=baseline,
        precision="fp32",
        batch_size=20,
    )
    reference = captum_attr.Occlusion(resnet).attribute(
        x,
        sliding_window_shapes=(3, window, window),
        strides=stride if isinstance(stride, int) else (3, *stride),
        baselines=baseline,
        target=torch.tensor(targets),
        perturbations_per_eval=16,
    )
    assert close(exp.extra["attribution"], reference)
    assert close(exp.raw, reference[:, 0])


def test_windows_cover_the_input_and_clip_at_the_border():
    places = windows((10, 7), (4, 8), (3, 2))
    assert len(places) == 3 * 1  # ceil(6 / 3) + 1 starts, one window clipped to 7
    assert places[-1] == (slice(6, 10), slice(0, 7))
    count = torch.zeros(10, 7)
    for place in places:
        count[place] += 1
    assert count.min() >= 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": 0}, "window must be a positive int or a tuple of 2 positive ints, got 0"),
        ({"stride": (2, 2, 2)}, "stride must be a positive int or a tuple of 2"),
        ({"precision": "fp16"}, "precision must be one of auto, fp32, bf16, int8"),
    ],
)
def test_option_errors(options, message):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(camlens.CamlensValueError, match=message):
        camlens.explain(model, torch.zeros(1, 3, 8, 8), method="occlusion", **options)


@pytest.mark.parametrize(
    "precision",
    [
        "bf16",
        pytest.param(
            "int8", marks=pytest.mark.skipif(not int8_supported(), reason="no x86 int8 engine")
        ),
    ],
)
def test_reduced_precision_drops_follow_fp32(resnet, x, precision):
    # the clean score runs in the same precision as the occluded ones, so its rounding cancels;
    # at 64 px bf16 stays within 5e-2 of the largest drop, int8 only correlates (0.995 measured)
    options = {"target": [3, 7], "window": 32, "stride": 32, "batch_size": 8}
    exact = camlens.explain(resnet, x, method="occlusion", precision="fp32", **options).raw
    reduced = camlens.explain(resnet, x, method="occlusion", precision=precision, **options).raw
    assert torch.corrcoef(torch.stack([exact.flatten(), reduced.flatten()]))[0, 1] > 0.98
    assert precision != "bf16" or close(reduced, exact, 5e-2)
