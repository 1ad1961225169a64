"""pytorch-grad-cam's CAM variants: element-wise Grad-CAM, Eigen-Grad-CAM and KPCA-CAM, against
pytorch-grad-cam 1.5.7 (its SVD and KPCA signs aside) and a float64 scikit-learn KPCA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from toy_models import TINY_X

import camlens
from camlens.methods.variants import KERNELS, kpca

TARGETS = [3, 500, 7, 999]


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(4, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    capture = camlens.backends.adapter_for(model).capture(x, ["layer4"], TARGETS)
    return model, x, capture.activations[0], capture.gradients[0]


def theirs(model, x, name: str, **options) -> torch.Tensor:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(t) for t in TARGETS]
    with getattr(pytorch_grad_cam, name)(model, [model.layer4], **options) as reference:
        return torch.from_numpy(reference(x, targets=targets))


def signs(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per image, +1 where the raw maps agree up to 1e-4 of the largest value, -1 where they
    agree once one is negated (an SVD's or eigenvector's sign)."""
    sign = np.sign((ours * reference).sum(axis=(1, 2)))
    scale = np.abs(reference).max(axis=(1, 2), keepdims=True)
    assert (np.abs(ours - sign[:, None, None] * reference) / scale).max() < 1e-4
    return sign


def test_elementwise_hand_computed(tiny_dense):
    # relu(g0 A0) = [[1, 0], [0, 8]], relu(g1 A1) = [[0, .5], [0, 0]] (see test_gradient.HAND)
    exp = camlens.explain(
        tiny_dense, TINY_X, method="gradcam-elementwise", target=1, normalize=False
    )
    torch.testing.assert_close(exp.raw[0], torch.tensor([[1.0, 0.5], [0.0, 8.0]]))


def test_elementwise_agrees_with_pytorch_grad_cam(resnet):
    model, x = resnet[:2]
    exp = camlens.explain(model, x, method="gradcam-elementwise", target=TARGETS)
    assert (exp.maps - theirs(model, x, "GradCAMElementWise")).abs().max() < 1e-4


def test_eigengradcam_agrees_with_pytorch_grad_cam_up_to_sign(resnet):
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    model, x, a, g = resnet
    exp = camlens.explain(model, x, method="eigengradcam", target=TARGETS, normalize=False)
    sign = signs(exp.raw.numpy(), get_2d_projection((a * g).numpy()))
    # camlens' sign: positive correlation with HiResCAM's map sum_k g A
    hires = (a * g).sum(dim=1).flatten(1)
    assert ((exp.raw.flatten(1) * (hires - hires.mean(dim=1, keepdim=True))).sum(dim=1) > 0).all()
    maps = camlens.explain(model, x, method="eigengradcam", target=TARGETS).maps
    same = sign > 0
    assert same.any()
    assert (maps[same] - theirs(model, x, "EigenGradCAM")[same]).abs().max() < 1e-4


@pytest.mark.parametrize("kernel", KERNELS)
def test_kpcacam_agrees_with_pytorch_grad_cam_up_to_sign(resnet, kernel):
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

    a = resnet[2]
    signs(kpca(a, kernel).numpy(), get_2d_projection_kernel(a.numpy(), kernel))


def test_kpcacam_maps_equal_pytorch_grad_cam_where_the_signs_agree(resnet):
    # kernel and gamma given to both (KPCA_CAM's defaults: sigmoid, gamma = 1/C)
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

    model, x, a = resnet[:3]
    exp = camlens.explain(model, x, method="kpcacam", kernel="sigmoid", gamma=0.004, target=TARGETS)
    same = signs(exp.raw.numpy(), get_2d_projection_kernel(a.numpy(), "sigmoid", 0.004)) > 0
    assert same.any()
    reference = theirs(model, x, "KPCA_CAM", kernel="sigmoid", gamma=0.004)
    assert (exp.maps[same] - reference[same]).abs().max() < 1e-4


def test_kpcacam_matches_float64_kernel_pca_where_float32_does_not(resnet):
    # exp(-gamma d^2) in float32 loses digits: pytorch-grad-cam (scikit-learn on float32
    # activations) is 2.4e-4 off the float64 result; camlens computes the kernel in float64.
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

    a = resnet[2]
    exact = get_2d_projection_kernel(a.double().numpy(), "rbf", 0.01).astype(np.float64)
    ours = kpca(a, "rbf", 0.01).numpy()
    scale = np.abs(exact).max()
    assert np.abs(np.abs(ours) - np.abs(exact)).max() / scale < 1e-6
    float32 = get_2d_projection_kernel(a.numpy(), "rbf", 0.01)
    assert np.abs(np.abs(float32) - np.abs(exact)).max() / scale > 1e-4


def test_kpcacam_is_class_agnostic_and_checks_its_options(small_cnn, images):
    first = camlens.explain(small_cnn, images, method="kpcacam", target=0)
    second = camlens.explain(small_cnn, images, method="kpcacam", target=4)
    torch.testing.assert_close(first.maps, second.maps)
    with pytest.raises(camlens.CamlensValueError, match="kernel must be one of sigmoid"):
        camlens.KPCACAM(small_cnn, kernel="laplacian")
    with pytest.raises(camlens.CamlensValueError, match="gamma must be a number > 0"):
        camlens.KPCACAM(small_cnn, gamma=0)
