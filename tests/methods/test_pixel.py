"""Pixel-space methods against Captum, guided backprop's ReLU handling, smoothing options."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from needs import need

import camlens
from camlens.backends.guided import guided_relu
from camlens.methods.gradient import gradcam

# Captum's own notices about its reference computations, not camlens's
pytestmark = [
    pytest.mark.filterwarnings("ignore:Input Tensor:UserWarning:captum"),
    pytest.mark.filterwarnings("ignore:Setting backward hooks:UserWarning:captum"),
]


@pytest.fixture(scope="module")
def captum_attr():
    """Captum's attribution methods, the reference implementations."""
    return need("captum.attr")


def random_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with its BatchNorm statistics and affine parameters random (seed 0): at
    initialisation they make a network positively homogeneous, with a kink at x = 0."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = torch.rand(n, generator=generator) + 0.5
            module.bias.data = torch.randn(n, generator=generator) * 0.1
            module.running_mean = torch.randn(n, generator=generator) * 0.1
            module.running_var = torch.rand(n, generator=generator) + 0.5
    return model


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    """resnet18 with random weights, BatchNorm included (:func:`random_batchnorm`)."""
    torch.manual_seed(0)
    return random_batchnorm(need("torchvision").models.resnet18(num_classes=10).eval())


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    torch.manual_seed(1)
    batch = torch.randn(2, 3, 64, 64).clamp(-2, 2)
    batch[:, :, 0, 0], batch[:, :, 0, 1] = -2.0, 2.0  # the same value range for both images
    return batch


@pytest.fixture(scope="module")
def targets(resnet: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return resnet(x).argmax(dim=1)


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    a, b = a.detach(), b.detach()
    scale = float(b.abs().max()) or 1.0
    return float((a - b).abs().max()) <= tol * scale


def test_saliency_matches_captum(captum_attr, resnet, x, targets):
    exp = camlens.explain(resnet, x, method="saliency")
    reference = captum_attr.Saliency(resnet).attribute(x, target=targets, abs=False)
    assert torch.equal(exp.targets, targets)
    assert close(exp.extra["attribution"], reference)
    assert close(exp.raw, reference.abs().amax(dim=1))
    assert exp.layer == "" and exp.maps.shape == (2, 64, 64) and exp.raw.shape == (2, 64, 64)


def test_guided_backprop_matches_captum(captum_attr, resnet, x, targets):
    exp = camlens.explain(resnet, x, method="guided-backprop", target=targets.tolist())
    reference = captum_attr.GuidedBackprop(resnet).attribute(x, target=targets)
    assert close(exp.extra["attribution"], reference)
    assert close(exp.raw, reference.abs().amax(dim=1))


def test_guided_gradcam_matches_captum(captum_attr, resnet, x, targets):
    exp = camlens.explain(resnet, x, method="guided-gradcam", layer="layer4")
    reference = captum_attr.GuidedGradCam(resnet, resnet.layer4).attribute(
        x, target=targets, interpolate_mode="bilinear"
    )
    assert exp.layer == "layer4"
    assert close(exp.extra["attribution"], reference)


def test_integrated_gradients_matches_captum_and_is_complete(captum_attr, resnet, x, targets):
    exp = camlens.explain(resnet, x, method="integrated-gradients", steps=50)
    reference = captum_attr.IntegratedGradients(resnet).attribute(
        x, target=targets, n_steps=50, method="riemann_trapezoid"
    )
    # Captum weights the 50 trapezoid steps by 1/50 instead of 1/49
    assert close(exp.extra["attribution"] * 49 / 50, reference)
    with torch.no_grad():
        logits_x, logits_0 = resnet(x), resnet(torch.zeros_like(x))
    delta = (logits_x - logits_0).gather(1, targets[:, None])[:, 0]
    gap = exp.extra["completeness_gap"]
    tolerance = 1e-3 * float(delta.abs().max())
    assert torch.allclose(exp.raw.sum(dim=(1, 2)) - delta, gap, atol=tolerance)
    assert ((gap.abs() / delta.abs()) < 0.01).all()


def test_smoothgrad_matches_captum_noise_tunnel(captum_attr, resnet, x, targets):
    exp = camlens.explain(resnet, x, method="smoothgrad", samples=6, seed=0)
    sigma = 0.15 * 4.0  # noise x value range, the same for both images
    torch.manual_seed(0)
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(resnet))
    reference = tunnel.attribute(
        x, nt_type="smoothgrad", nt_samples=6, stdevs=sigma, target=targets, abs=False
    )
    assert exp.extra["samples"] == 6
    assert close(exp.extra["attribution"], reference)


def test_smooth_option_averages_a_cam_over_the_same_noisy_copies(resnet, x):
    exp = camlens.explain(resnet, x, method="gradcam", smooth=3, seed=5, batch_size=4)
    generator = torch.Generator().manual_seed(5)
    std = torch.full((6, 3, 64, 64), 0.6)
    noisy = x.repeat_interleave(3, dim=0) + torch.normal(0.0, std, generator=generator)
    plain = camlens.GradCAM(resnet)(x)
    raws = camlens.GradCAM(resnet)(noisy, target=plain.targets.repeat_interleave(3)).raw
    assert torch.allclose(exp.raw, raws.reshape(2, 3, 2, 2).mean(dim=1), atol=1e-5)
    assert torch.equal(exp.targets, plain.targets) and torch.equal(exp.scores, plain.scores)


def test_augment_averages_flips_and_scales_mapped_back(resnet):
    torch.manual_seed(2)
    x = torch.randn(1, 3, 96, 96)
    exp = camlens.explain(resnet, x, method="gradcam", augment=True)
    target = int(exp.targets[0])
    expected = []
    for flip in (False, True):
        for scale in (1.0, 0.9, 1.1):
            xt = x.flip(-1) if flip else x
            size = round(96 * scale)
            xt = F.interpolate(xt, size=(size, size), mode="bilinear", align_corners=False)
            raw = camlens.GradCAM(resnet)(xt, target=target).raw
            raw = F.interpolate(raw[:, None], size=(3, 3), mode="bilinear", align_corners=False)
            expected.append(raw[:, 0].flip(-1) if flip else raw[:, 0])
    assert exp.raw.shape == (1, 3, 3)
    assert torch.allclose(exp.raw, torch.stack(expected).mean(dim=0), atol=1e-5)


class Inplace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


class Functional(Inplace):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


class Method(Inplace):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).relu()
        x = self.conv2(x).relu_()
        return self.fc(x.mean(dim=(2, 3)))


def test_guided_backprop_same_for_inplace_module_functional_and_method_relu():
    torch.manual_seed(3)
    a = Inplace().eval()
    b = Functional().eval()
    c = Method().eval()
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    ea = camlens.explain(a, x, method="guided-backprop", target=1)
    eb = camlens.explain(b, x, method="guided-backprop", target=1)
    ec = camlens.explain(c, x, method="guided-backprop", target=1)
    plain = camlens.explain(a, x, method="saliency", target=1)
    assert torch.equal(ea.extra["attribution"], eb.extra["attribution"])
    assert torch.equal(ea.extra["attribution"], ec.extra["attribution"])
    assert not torch.equal(ea.extra["attribution"], plain.extra["attribution"])
    # by hand: the backward through the last ReLU keeps only positive gradients
    h1 = F.relu(a.conv1(x))
    z2 = a.conv2(h1)
    grad_h2 = a.fc.weight[1][None, :, None, None].expand_as(z2) / 256
    grad_z2 = grad_h2.clamp_min(0) * (z2 > 0)
    (grad_h1,) = torch.autograd.grad(z2, h1, grad_z2)
    grad_z1 = grad_h1.clamp_min(0) * (h1 > 0)
    (grad_x,) = torch.autograd.grad(a.conv1(x), x, grad_z1)
    assert torch.allclose(ea.extra["attribution"], grad_x, atol=1e-6)


def test_guided_backprop_leaves_the_model_as_it_was_also_after_an_exception():
    torch.manual_seed(4)
    model = Inplace().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
    camlens.explain(model, x, method="guided-backprop")

    def failing(logits: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        camlens.explain(model, x, method="guided-backprop", target=failing)
    assert F.relu is not None and torch.relu.__module__ != "camlens.backends.guided"
    assert F.relu.__module__ == "torch.nn.functional"
    with torch.no_grad():
        assert torch.equal(model(x), before)
    assert model.relu.inplace and not list(model.relu._backward_hooks)


def test_guided_relu_context_replaces_no_function_and_ends_also_after_an_exception():
    originals = (F.relu, F.relu_, torch.relu, torch.relu_)
    x = torch.tensor([-1.0, 2.0], requires_grad=True)
    down = torch.tensor([-1.0, -1.0])  # a negative gradient: guided backprop stops it
    with pytest.raises(KeyError), guided_relu():
        assert (F.relu, F.relu_, torch.relu, torch.relu_) == originals
        (guided,) = torch.autograd.grad(F.relu(x), x, down)
        raise KeyError("x")
    (plain,) = torch.autograd.grad(F.relu(x), x, down)
    assert guided.tolist() == [0.0, 0.0] and plain.tolist() == [0.0, -1.0]


def test_guided_gradcam_is_guided_backprop_times_upsampled_gradcam(resnet, x):
    exp = camlens.explain(resnet, x, method="guided-gradcam", target=3)
    cam = camlens.explain(resnet, x, method="gradcam", target=3)
    guided = camlens.explain(resnet, x, method="guided-backprop", target=3)
    weight = F.interpolate(cam.raw.clamp_min(0)[:, None], size=(64, 64), mode="bilinear")
    assert close(exp.extra["attribution"], guided.extra["attribution"] * weight)
    assert torch.allclose(cam.raw, gradcam(*_capture(resnet, x, 3)), atol=1e-6)


def _capture(model, x, target):
    capture = camlens.GradCAM(model).adapter.capture(x, ["layer4"], target)
    return capture.activations[0], capture.gradients[0]


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("eigencam", {"smooth": 4}, "smooth=4 averages gradients over noisy copies"),
        ("saliency", {"augment": True}, "augment=True is for CAM methods"),
        ("integrated-gradients", {"steps": 1}, "steps must be an int >= 2, got 1"),
        ("smoothgrad", {"samples": 0}, "samples must be a positive int, got 0"),
        ("gradient-shap", {"n_samples": 0}, "n_samples must be a positive int, got 0"),
        ("gradient-shap", {"stdevs": -1}, "stdevs must be a number >= 0, got -1"),
        ("occlusion", {"smooth": 2}, "smooth=2 averages gradients over noisy copies"),
        ("gradcam", {"smooth": 2, "augment": True}, "pass smooth=N or augment=True, not both"),
    ],
)
def test_option_errors(method, options, message):
    with pytest.raises(camlens.CamlensValueError, match=message):
        camlens.explain(Inplace(), torch.zeros(1, 3, 8, 8), method=method, **options)


def test_input_x_gradient_matches_captum(captum_attr, resnet, x, targets):
    exp = camlens.explain(resnet, x, method="input-x-gradient")
    reference = captum_attr.InputXGradient(resnet).attribute(x, target=targets)
    assert torch.equal(exp.targets, targets)
    assert close(exp.extra["attribution"], reference)
    assert close(exp.raw, reference.abs().amax(dim=1))


def test_deconvolution_matches_captum(captum_attr, resnet, x, targets):
    exp = camlens.explain(resnet, x, method="deconvolution", target=targets.tolist())
    reference = captum_attr.Deconvolution(resnet).attribute(x, target=targets)
    assert close(exp.extra["attribution"], reference)
    assert close(exp.raw, reference.abs().amax(dim=1))


def test_deconvolution_rule_for_functional_relus_ignores_the_forward_input():
    x = torch.tensor([-1.0, 2.0], requires_grad=True)
    with guided_relu("deconvolution"):
        (grad,) = torch.autograd.grad((F.relu(x) * torch.tensor([3.0, -4.0])).sum(), x)
    assert grad.tolist() == [3.0, 0.0]
    with guided_relu():
        (grad,) = torch.autograd.grad((torch.relu(x) * torch.tensor([3.0, 4.0])).sum(), x)
    assert grad.tolist() == [0.0, 4.0]


def test_gradient_shap_equals_its_formula_in_float64_with_the_same_draws(resnet, x, targets):
    baselines = torch.stack([torch.zeros(3, 64, 64), torch.full((3, 64, 64), 0.5)])
    options = {"n_samples": 3, "stdevs": 0.2, "baselines": baselines, "seed": 4}
    exp = camlens.explain(resnet, x, method="gradient-shap", batch_size=4, **options)
    assert torch.equal(exp.targets, targets)
    # the documented draws: one CPU generator, noise, then baseline indices, then alphas
    generator = torch.Generator().manual_seed(4)
    noise = torch.randn(6, 3, 64, 64, generator=generator) * 0.2
    index = torch.randint(2, (6,), generator=generator)
    alphas = torch.rand(6, generator=generator)
    assert torch.equal(exp.extra["alphas"], alphas.reshape(2, 3))
    assert torch.equal(exp.extra["baseline_indices"], index.reshape(2, 3))
    model = resnet.double()
    try:
        noisy = x.double().repeat_interleave(3, dim=0) + noise.double()
        base = baselines.double()[index]
        points = (base + alphas.double()[:, None, None, None] * (noisy - base)).requires_grad_()
        score = model(points).gather(1, targets.repeat_interleave(3)[:, None]).sum()
        (grad,) = torch.autograd.grad(score, points)
    finally:
        resnet.float()
    expected = ((noisy - base) * grad).reshape(2, 3, 3, 64, 64).mean(dim=1)
    assert close(exp.extra["attribution"].double(), expected)
    assert close(exp.raw.double(), expected.abs().amax(dim=1))
    again = camlens.explain(resnet, x, method="gradient-shap", batch_size=6, **options)
    assert close(again.extra["attribution"], exp.extra["attribution"], 1e-6)


def test_gradient_shap_with_one_sample_at_alpha_one_is_input_x_gradient(resnet, x):
    shap = camlens.GradientShap(resnet, n_samples=1)
    shap.draws = lambda xc: (torch.zeros_like(xc), torch.zeros(2, dtype=torch.long), torch.ones(2))
    exp = shap(x)
    reference = camlens.explain(resnet, x, method="input-x-gradient")
    assert close(exp.extra["attribution"], reference.extra["attribution"])
