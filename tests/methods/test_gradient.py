"""Grad-CAM family: hand-computed maps, float64 references, pytorch-grad-cam and Captum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from toy_models import TINY_X

import camlens
from camlens.methods.gradient import gradcam_plus_plus

# Hand-computed raw maps of TinyDense for class 1 (activations A0 = [[1,2],[3,4]],
# A1 = [[0,1],[1,0]]; gradients g0 = [[1,-1],[0,2]], g1 = [[.5,.5],[-1,1]]).
A0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
A1 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
HAND = {
    # alpha = mean(g) = (0.5, 0.25)
    "gradcam": 0.5 * A0 + 0.25 * A1,
    # sum_k g * A
    "hirescam": torch.tensor([[1.0, -1.5], [-1.0, 8.0]]),
    # sum_k relu(g) * A
    "layercam": torch.tensor([[1.0, 0.5], [0.0, 8.0]]),
    # w0 = (1 - 2 + 0 + 8) / 10, w1 = (0 + .5 - 1 + 0) / 2
    "xgradcam": 0.7 * A0 - 0.25 * A1,
    # ch0: alpha = 1/12, -1/8, 0, 1/22 -> w0 = 1/12 + 2/22; ch1: alpha = 1/3, 1/3, 0 (zero
    # denominator: 2 - 2), 1/4 -> w1 = 1/3 + 1/4
    "gradcam++": (1 / 12 + 1 / 11) * A0 + (1 / 3 + 1 / 4) * A1,
}


@pytest.mark.parametrize("method", sorted(HAND))
def test_hand_computed_maps(tiny_dense, method):
    exp = camlens.explain(tiny_dense, TINY_X, method=method, target=1, normalize=False)
    torch.testing.assert_close(exp.raw[0], HAND[method], rtol=0, atol=1e-6)
    assert exp.layer == "layer"
    expected = camlens.minmax(HAND[method].clamp_min(0)[None])[0]
    exp = camlens.explain(tiny_dense, TINY_X, method=method, target=1)
    assert exp.maps.shape == (1, 2, 2)
    torch.testing.assert_close(exp.maps[0], expected, rtol=0, atol=1e-6)


def test_gap_model_gradients_are_uniform(tiny_gap):
    # d y_c / d A_k = W[c, k] / (h w): every method reduces to a weighted sum with W / 4.
    exp = camlens.explain(tiny_gap, TINY_X, method="gradcam", target=0, normalize=False)
    torch.testing.assert_close(exp.raw[0], 0.25 * A0 - 0.25 * A1, rtol=0, atol=1e-6)
    assert exp.targets.tolist() == [0]
    torch.testing.assert_close(exp.scores, torch.tensor([2.1]))
    torch.testing.assert_close(exp.probs, torch.tensor([2.1, 5.05]).softmax(0)[:1])


def gradcam_pp_reference(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The paper's Eq. 19 in float64, written independently of camlens."""
    a, g = a.astype(np.float64), g.astype(np.float64)
    sum_a = a.sum(axis=(2, 3), keepdims=True)
    num = g**2
    den = 2 * g**2 + sum_a * g**3
    alpha = np.zeros_like(g)
    np.divide(num, den, out=alpha, where=(g != 0) & (den != 0))
    weights = (alpha * np.maximum(g, 0)).sum(axis=(2, 3), keepdims=True)
    return (weights * a).sum(axis=1)


def _resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def test_gradcam_plus_plus_matches_float64_reference():
    model = _resnet18()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    capture = camlens.backends.adapter_for(model).capture(x, ["layer4"], None)
    a, g = capture.activations[0], capture.gradients[0]
    expected = gradcam_pp_reference(a.numpy(), g.numpy())
    got = gradcam_plus_plus(a, g)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_gradcam_plus_plus_differs_from_pytorch_grad_cam_epsilon():
    # pytorch-grad-cam adds 1e-6 to the denominator; with ResNet gradients of ~1e-3 that term
    # dominates alpha, so its maps measurably differ from the paper's formula.
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _resnet18()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    exp = camlens.explain(model, x, method="gradcam++")
    with GradCAMPlusPlus(model=model, target_layers=[model.layer4]) as reference:
        theirs = reference(x, targets=[ClassifierOutputTarget(int(t)) for t in exp.targets])
    assert (exp.maps - torch.from_numpy(theirs)).abs().max() > 1e-2


REFERENCE_CLASSES = ["GradCAM", "XGradCAM", "HiResCAM", "LayerCAM"]


@pytest.fixture(scope="module")
def reference_models():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18().eval()
    torch.manual_seed(0)
    vgg = torchvision.models.vgg11().eval()
    return {"resnet18": (resnet, resnet.layer4), "vgg11": (vgg, vgg.features[19])}


@pytest.mark.parametrize("arch", ["resnet18", "vgg11"])
@pytest.mark.parametrize("per_image", [False, True])
def test_agrees_with_pytorch_grad_cam(reference_models, arch, per_image):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, layer = reference_models[arch]
    x = torch.randn(4, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    target = [3, 500, 7, 999] if per_image else None
    for name in REFERENCE_CLASSES:
        exp = camlens.explain(model, x, method=name.lower(), target=target, layer=layer)
        assert exp.maps.abs().amax() > 0
        targets = [ClassifierOutputTarget(int(t)) for t in exp.targets]
        if per_image:
            assert exp.targets.tolist() == target
        with getattr(pytorch_grad_cam, name)(model=model, target_layers=[layer]) as reference:
            theirs = torch.from_numpy(reference(x, targets=targets))
        assert (exp.maps - theirs).abs().max() < 1e-3, name


def test_agrees_with_captum_layer_gradcam(reference_models):
    from captum.attr import LayerGradCam

    model, layer = reference_models["resnet18"]
    x = torch.randn(4, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    exp = camlens.explain(model, x, method="gradcam", target=[1, 2, 3, 4])
    attribution = LayerGradCam(model, layer).attribute(x, target=[1, 2, 3, 4])
    theirs = F.interpolate(attribution.relu(), size=(128, 128), mode="bilinear")[:, 0]
    assert (exp.maps - camlens.minmax(theirs.detach())).abs().max() < 1e-3
    torch.testing.assert_close(exp.raw, attribution[:, 0].detach(), rtol=1e-4, atol=1e-7)


def test_tiny_magnitudes_keep_their_shape():
    # Scaling the head by 1e-12 gives maps of ~1e-12, where libraries' epsilons dominate;
    # camlens adds none, so the normalised map is unchanged.
    model = _resnet18()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    before = camlens.explain(model, x, method="gradcam", target=3)
    with torch.no_grad():
        model.fc.weight.mul_(1e-12)
    after = camlens.explain(model, x, method="gradcam", target=3)
    assert after.raw.abs().max() < 1e-10
    assert (before.maps - after.maps).abs().max() < 1e-4


def test_exact_on_a_random_mobilenet_with_vanishing_maps():
    # Random-weight MobileNetV3 gives Grad-CAM maps of ~1e-11 or less: camlens still returns the
    # float64 computation of the same formula, not an epsilon-flattened map.
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(5))
    capture = camlens.backends.adapter_for(model).capture(x, ["features"], [1, 2])
    a, g = capture.activations[0].double(), capture.gradients[0].double()
    raw = (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1)
    assert raw.abs().max() < 1e-9
    up = F.interpolate(raw.clamp_min(0)[:, None], size=(96, 96), mode="bilinear")[:, 0]
    exp = camlens.explain(model, x, method="gradcam", target=[1, 2])
    assert exp.maps.max() == 1
    torch.testing.assert_close(exp.maps, camlens.minmax(up).float(), rtol=0, atol=1e-4)
