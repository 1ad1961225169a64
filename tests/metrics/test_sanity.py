"""Sanity checks (Adebayo et al. 2018): cascading randomisation on a CNN trained on digits."""

from __future__ import annotations

import copy

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
    """The paper's result on the demo model, with its signed rank correlation (a gradient's sign
    counts): Grad-CAM's and the gradient's maps are unrelated to the originals as soon as the
    top layer is random, while Guided Backprop's stay close through the upper blocks and keep
    more of the original than either once every layer is random.

    Measured (mean over the 16 samples): Grad-CAM -0.06, saliency 0.01, Guided Backprop 0.13
    at the last step, Guided Backprop 0.77 to 0.43 over the first seven steps. The absolute-value
    correlation of saliency (|gradient|) stays at ~0.3, as Guided Backprop's does, on this
    five-layer model."""
    from camlens.datasets import read_boxes
    from camlens.models.checkpoint import demo_path

    paths, _, _ = read_boxes(demo_path() / "samples" / "boxes.csv")
    x, _ = camlens.load_images(paths, preset="unit")
    model = camlens.load_model("demo")
    curves = {
        name: metrics.sanity_check(model, x, name).curves()["spearman"]
        for name in ("gradcam", "saliency", "guided-backprop")
    }
    random_steps = slice(1, None)
    for name in ("gradcam", "saliency"):
        assert max(abs(v) for v in curves[name][random_steps]) < 0.1, curves[name]
        assert curves["guided-backprop"][-1] > curves[name][-1] + 0.1, curves
    assert min(curves["guided-backprop"][1:8]) > 0.4, curves["guided-backprop"]


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


def test_signed_correlation_uses_the_signed_attribution(digit_model):
    """Saliency's map is |gradient|, so its signed correlation compares the gradients summed over
    channels; a CAM's signed map is its own map."""
    from camlens.methods._registry import get
    from camlens.metrics.sanity import randomise, signed_map

    model, images, _ = digit_model
    x = images[:2]
    saliency = get("saliency")(model, relu=False, normalize=False)(x)
    torch.testing.assert_close(signed_map(saliency), saliency.extra["attribution"].sum(dim=1))
    assert bool((saliency.maps >= 0).all()) and bool((signed_map(saliency) < 0).any())
    gradcam = get("gradcam")(model, relu=False, normalize=False)(x)
    assert signed_map(gradcam) is gradcam.maps
    result = metrics.sanity_check(model, x, "saliency", layers=["fc"])
    randomised = copy.deepcopy(model)
    torch.manual_seed(0)
    randomise(randomised.fc)
    after = get("saliency")(randomised, relu=False, normalize=False)(x, target=saliency.targets)
    torch.testing.assert_close(result.maps[1], after.maps)
    want = metrics.spearman(signed_map(saliency), signed_map(after))
    torch.testing.assert_close(result.spearman[1], want)
    assert not torch.allclose(result.spearman[1], result.spearman_abs[1])
