"""SS-CAM and IS-CAM against TorchCAM 0.5 (same noise draws for SS-CAM)."""

from __future__ import annotations

import pytest
import torch
from needs import need

import camlens


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return need("torchvision").models.resnet18().eval()


def torchcam_map(cls, model, x, targets, seed, **options):
    with cls(model, "layer3", batch_size=64, input_shape=tuple(x.shape[1:]), **options) as cam:
        with torch.no_grad():
            logits = model(x)
        torch.manual_seed(seed)  # TorchCAM draws SS-CAM's noise from the global generator
        return cam(targets, logits, normalized=False)[0]


@pytest.mark.parametrize(
    ("method", "name", "options"),
    [("iscam", "ISCAM", {"num_samples": 2}), ("sscam", "SSCAM", {"num_samples": 2, "std": 1.5})],
)
def test_matches_torchcam(resnet, method, name, options):
    torchcam = need("torchcam.methods")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    seed = {"seed": 3} if method == "sscam" else {}
    exp = camlens.explain(
        resnet, x, method=method, layer="layer3", target=[3, 7], precision="fp32",
        **options, **seed,
    )  # fmt: skip
    expected = torchcam_map(getattr(torchcam, name), resnet, x, [3, 7], 3, **options)
    assert float((exp.raw.clamp_min(0) - expected).abs().max()) < 1e-4


def test_sscam_seed_fixes_the_draws(small_cnn, images):
    a = camlens.explain(small_cnn, images, method="sscam", seed=1).raw
    assert torch.equal(a, camlens.explain(small_cnn, images, method="sscam", seed=1).raw)
    assert not torch.equal(a, camlens.explain(small_cnn, images, method="sscam", seed=2).raw)


def test_iscam_with_one_sample_is_torchcams_score_cam_weights(small_cnn, images):
    """N = 1: c_1 = 1, the plain masked scores (TorchCAM's Score-CAM masks)."""
    method = camlens.ISCAM(small_cnn, num_samples=1, precision="fp32")
    assert method.sample(torch.ones(1), 0).item() == 1.0
    four = camlens.ISCAM(small_cnn, num_samples=4)
    assert [four.sample(torch.ones(1), i).item() for i in range(4)] == [0.25, 0.75, 1.5, 2.5]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_num_samples_is_checked(small_cnn, bad):
    with pytest.raises(camlens.CamlensValueError, match="num_samples must be a positive int"):
        camlens.SSCAM(small_cnn, num_samples=bad)
