"""Agreement on deeper networks: torchvision ResNet-50 (``layer4``) and DenseNet-121
(``features``), random weights, a batch of 2 at 64 px, against pytorch-grad-cam and Captum.

The ResNet-18 tests beside this one check each method in depth; these check that the same
agreement holds through bottleneck blocks, dense concatenations and DenseNet's functional ReLU.
Each network is built once. DenseNet-121 runs the cases that differ there (its in-place and
functional final ReLU, its concatenations): Grad-CAM, Grad-CAM++ and guided backprop.
Left out to keep the module near a minute on two cores (the ResNet-18 tests cover them):
XGrad-CAM, LayerCAM, element-wise Grad-CAM and saliency (the gradients HiRes-CAM and input x
gradient already compare), HiRes-CAM on DenseNet-121 (pytorch-grad-cam's full backward
there is the costliest case), the Captum methods but guided backprop on DenseNet-121; Score-CAM and
Ablation-CAM (2048 and 1024 channels: thousands of forwards); SS-CAM and IS-CAM (TorchCAM, as
costly); KPCA-CAM, whose kernel PCA on the 2x2 grid of a 64 px input is degenerate
(test_variants.py checks it at 128 px).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from needs import need
from test_gradient import gradcam_pp_reference
from test_pixel import close, pytestmark, random_batchnorm  # noqa: F401 (Captum's notices)
from test_variants import signs

import camlens

TARGETS = [3, 7]
NETS = {"resnet50": "layer4", "densenet121": "features"}


@pytest.fixture(scope="module")
def built() -> dict:
    """The networks built so far (each once per module)."""
    return {}


@pytest.fixture
def net(request, built):
    """(model, layer name, layer module, input, activations, gradients) of one network."""
    arch = request.param
    if arch not in built:
        torch.manual_seed(0)
        model = random_batchnorm(getattr(need("torchvision").models, arch)().eval())
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)).clamp(-2, 2)
        name = NETS[arch]
        capture = camlens.backends.adapter_for(model).capture(x, [name], TARGETS)
        layer = dict(model.named_modules())[name]
        built[arch] = model, name, layer, x, capture.activations[0], capture.gradients[0]
    return built[arch]


def cases(names: str, *rows: tuple) -> list:
    """``rows`` with each network of the comma-separated ``names`` in front."""
    return [(arch, *row) for arch in names.split(",") for row in rows]


#: float64 raw maps of the methods whose pytorch-grad-cam maps DenseNet's in-place ReLU changes
ALIASED = {"gradcam": lambda a, g: (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1)}


def densenet_with_a_relu_module(model: torch.nn.Module) -> torch.nn.Module:
    """torchvision's DenseNet forward with its functional ReLU as an ``nn.ReLU``: the same
    function."""
    nn = torch.nn
    pool = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return nn.Sequential(model.features, pool, model.classifier).eval()


def pgc_maps(net, cls: str) -> torch.Tensor:
    """pytorch-grad-cam's (B, H, W) maps of class ``cls`` for the targets."""
    pytorch_grad_cam = need("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, _, layer, x = net[:4]
    with getattr(pytorch_grad_cam, cls)(model=model, target_layers=[layer]) as reference:
        return torch.from_numpy(reference(x, targets=[ClassifierOutputTarget(t) for t in TARGETS]))


@pytest.mark.parametrize(
    ("net", "method", "cls"),
    cases("resnet50,densenet121", ("gradcam", "GradCAM"))
    + cases("resnet50", ("hirescam", "HiResCAM")),
    indirect=["net"],
)
def test_cam_maps_equal_pytorch_grad_cam(net, method, cls):
    model, name, _, x, a, g = net
    if name == "features" and method in ALIASED:
        # DenseNet applies F.relu(features, inplace=True) after this layer, which overwrites
        # the activations pytorch-grad-cam keeps (a detached alias on the CPU): its Grad-CAM and
        # XGrad-CAM weight relu(A), not A. The formula in float64 is the reference there.
        exp = camlens.explain(model, x, method=method, layer=name, target=TARGETS, normalize=False)
        expected = ALIASED[method](a.double(), g.double())
        assert close(exp.raw, expected.float())
        return
    exp = camlens.explain(model, x, method=method, layer=name, target=TARGETS)
    assert exp.maps.abs().amax() > 0
    assert (exp.maps - pgc_maps(net, cls)).abs().max() < 1e-4


@pytest.mark.parametrize("net", sorted(NETS), indirect=True)
def test_gradcam_plus_plus_equals_the_paper_in_float64(net):
    # pytorch-grad-cam's 1e-6 in the denominator changes its maps (test_gradient.py)
    model, name, _, x, a, g = net
    exp = camlens.explain(model, x, method="gradcam++", layer=name, target=TARGETS, normalize=False)
    expected = gradcam_pp_reference(a.numpy(), g.numpy())
    np.testing.assert_allclose(
        exp.raw.numpy(), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
    )


@pytest.mark.parametrize(
    ("net", "method", "projection"),
    cases(
        "resnet50",
        ("eigencam", lambda a, g: ("get_2d_projection", a)),
        ("eigengradcam", lambda a, g: ("get_2d_projection", a * g)),
    ),
    indirect=["net"],
)
def test_projections_equal_pytorch_grad_cam_up_to_sign(net, method, projection):
    # pytorch-grad-cam leaves the sign of the SVD's or KPCA's component as it comes
    svd = need("pytorch_grad_cam.utils.svd_on_activations")
    model, name, _, x, a, g = net
    exp = camlens.explain(model, x, method=method, layer=name, target=TARGETS, normalize=False)
    function, values = projection(a, g)
    signs(exp.raw.numpy(), getattr(svd, function)(values.numpy()))


@pytest.mark.parametrize(
    ("net", "method", "cls", "options", "theirs"),
    cases(
        "resnet50",
        ("input-x-gradient", "InputXGradient", {}, {}),
        ("deconvolution", "Deconvolution", {}, {}),
        (
            "occlusion",
            "Occlusion",
            {"window": 32, "stride": 32, "precision": "fp32"},
            {"sliding_window_shapes": (3, 32, 32), "strides": 32},
        ),
    )
    + cases("resnet50,densenet121", ("guided-backprop", "GuidedBackprop", {}, {})),
    indirect=["net"],
)
def test_attributions_equal_captum(net, method, cls, options, theirs):
    model, name, _, x = net[:4]
    exp = camlens.explain(model, x, method=method, target=TARGETS, **options)
    if name == "features" and method in ("deconvolution", "guided-backprop"):
        # Captum's rules replace nn.ReLU modules only; DenseNet's last ReLU is F.relu, which
        # camlens treats as a module: Captum agrees once that ReLU is a module (the
        # deconvolution rule likewise; only guided backprop runs here, for time)
        model = densenet_with_a_relu_module(model)
    reference = getattr(need("captum.attr"), cls)(model).attribute(
        x, target=torch.tensor(TARGETS), **theirs
    )
    assert close(exp.extra["attribution"], reference)


@pytest.mark.parametrize("net", ["resnet50"], indirect=True)
def test_integrated_gradients_equals_captum(net):
    model, _, _, x = net[:4]
    exp = camlens.explain(model, x, method="integrated-gradients", steps=4, target=TARGETS)
    captum = need("captum.attr").IntegratedGradients(model)
    reference = captum.attribute(
        x, target=torch.tensor(TARGETS), n_steps=4, method="riemann_trapezoid"
    )
    # Captum weights the trapezoid steps by 1/n instead of 1/(n - 1) (test_pixel.py)
    assert close(exp.extra["attribution"] * 3 / 4, reference)
