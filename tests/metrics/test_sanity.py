"""Sanity checks (Adebayo et al. 2018): cascading randomisation on a CNN trained on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

import camlens
from camlens import metrics
from camlens.errors import CamlensTypeError, CamlensValueError


def test_spearman_matches_scipy_with_ties():
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (3, 12, 12), generator=generator).float()
    b = a + torch.rand(3, 12, 12, generator=generator) * 3
    got = metrics.spearman(a, b)
    for i in range(3):
        want = spearmanr(a[i].reshape(-1).numpy(), b[i].reshape(-1).numpy()).statistic
        assert float(got[i]) == pytest.approx(want, abs=1e-6)
    assert float(metrics.spearman(a[:1], torch.zeros(1, 12, 12))[0]) == 0.0  # constant map


def test_ssim_matches_scikit_image():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(2, 20, 24, generator=generator)
    b = (a + 0.3 * torch.rand(2, 20, 24, generator=generator)).clamp(0, 1)
    got = metrics.ssim(a, b)
    for i in range(2):
        want = structural_similarity(
            a[i].double().numpy(),
            b[i].double().numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert float(got[i]) == pytest.approx(want, abs=1e-5)
    torch.testing.assert_close(metrics.ssim(a, a), torch.ones(2))
    with pytest.raises(CamlensValueError, match=r"at least 11x11 pixels, got \(8, 8\)"):
        metrics.ssim(torch.rand(1, 8, 8), torch.rand(1, 8, 8))


@pytest.mark.parametrize("method", ["gradcam", "cam", "gradcam++"])
def test_cam_family_maps_lose_their_structure_under_randomisation(digit_model, method):
    model, images, _ = digit_model
    x = images[:8]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = metrics.sanity_check(model, x, method)
    assert result.steps == ["original", "fc", "conv3", "conv2", "conv1"]
    assert result.spearman.shape == result.spearman_abs.shape == result.ssim.shape == (5, 8)
    torch.testing.assert_close(result.spearman[0], torch.ones(8))
    torch.testing.assert_close(result.ssim[0], torch.ones(8))
    curves = result.curves()
    # the top layer alone already changes the maps; with every layer random, nothing is left
    assert curves["spearman"][1] < 0.5
    assert abs(curves["spearman"][-1]) < 0.25
    assert abs(curves["spearman_abs"][-1]) < 0.25
    assert abs(curves["ssim"][-1]) < 0.25
    for key, value in model.state_dict().items():  # the model itself is untouched
        assert torch.equal(value, before[key])
    again = metrics.sanity_check(model, x, method, seed=0)
    torch.testing.assert_close(again.spearman, result.spearman)


def test_guided_backprop_survives_randomisation_where_gradcam_and_saliency_do_not(digit_model):
    """The paper's Figure 2 in numbers: Guided Backprop's maps stay close to the original ones
    after every layer is re-initialised; Grad-CAM's and the gradient's do not."""
    model, images, _ = digit_model
    x = images[:8]
    final = {
        name: metrics.sanity_check(model, x, name).curves()["spearman"][-1]
        for name in ("gradcam", "saliency", "guided-backprop")
    }
    assert final["guided-backprop"] > final["gradcam"] + 0.2, final
    assert final["guided-backprop"] > final["saliency"] + 0.2, final


def test_on_the_bundled_demo_model():
    """On the demo model Grad-CAM's maps lose all structure once every layer is random, while
    Guided Backprop keeps a rank correlation of ~0.3 with the original (it still traces the
    input's edges). Measured: saliency keeps ~0.33 there too, so on this small model the gradient
    does not fall below Guided Backprop as it does in the paper (Inception v3) and on DigitNet."""
    from camlens.checkpoint import demo_path
    from camlens.datasets import read_boxes

    paths, _, _ = read_boxes(demo_path() / "samples" / "boxes.csv")
    x, _ = camlens.load_images(paths, preset="unit")
    model = camlens.load_model("demo")
    final = {
        name: metrics.sanity_check(model, x, name).curves()["spearman"][-1]
        for name in ("gradcam", "saliency", "guided-backprop")
    }
    assert abs(final["gradcam"]) < 0.1, final
    assert final["guided-backprop"] > final["gradcam"] + 0.2, final
    assert 0.2 < final["saliency"] < 0.45, final


def test_layers_and_plot(digit_model, tmp_path):
    model, images, _ = digit_model
    result = metrics.sanity_check(model, images[:2], "gradcam", layers=["fc", "conv2"])
    assert result.steps == ["original", "fc", "conv2"]
    path = metrics.plot_sanity([result], tmp_path / "sanity.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(CamlensValueError, match=r"layers names modules the model does not have"):
        metrics.sanity_check(model, images[:2], "gradcam", layers=["head"])
    with pytest.raises(CamlensTypeError, match="randomises a torch.nn.Module's parameters"):
        metrics.sanity_check(np.zeros(3), images[:2], "gradcam")
    with pytest.raises(CamlensValueError, match="unknown method 'gradcan'"):
        metrics.sanity_check(model, images[:2], "gradcan")
