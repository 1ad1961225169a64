"""Methods built from another method, on a random-weight ResNet-18: Finer-CAM against
pytorch-grad-cam 1.5.7 (softmax-weighted comparisons, alpha 1) and TorchCAM 0.5.0 (their mean,
gamma 0.6); RefineCAM against both (maps multiplied at the input's and at the finest layer's
resolution)."""

from __future__ import annotations

import pytest
import torch
from needs import need

import camlens
from camlens.maps import minmax
from camlens.methods.composite import nearest_classes, refine

PGC = {"gradcam": "GradCAM", "layercam": "LayerCAM", "gradcam++": "GradCAMPlusPlus"}
TORCHCAM = {"gradcam": "GradCAM", "layercam": "LayerCAM", "gradcam++": "GradCAMpp"}
STAGES = ["layer2", "layer3", "layer4"]


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = need("torchvision").models.resnet18().eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    return model, x


def pgc_finercam(model, x, base: str, target: int | None, **options) -> torch.Tensor:
    pgc = need("pytorch_grad_cam")
    cls = getattr(pgc, PGC[base])
    with pgc.FinerCAM(model, [model.layer4], base_method=cls) as cam:
        return torch.from_numpy(cam(x, target_idx=target, **options))


@pytest.mark.parametrize(("base", "target"), [("gradcam", None), ("layercam", 7)])
def test_finercam_matches_pytorch_grad_cam(resnet, base, target):
    model, x = resnet
    exp = camlens.explain(model, x, method="finercam", base=base, target=target)
    assert float((exp.maps - pgc_finercam(model, x, base, target)).abs().max()) < 1e-4


def test_finercam_alpha_matches_pytorch_grad_cam(resnet):
    model, x = resnet
    exp = camlens.explain(model, x, method="finercam", alpha=0.4, k=2)
    expected = pgc_finercam(model, x, "gradcam", None, alpha=0.4, comparison_categories=[1, 2])
    assert float((exp.maps - expected).abs().max()) < 1e-4


@pytest.mark.parametrize(("base", "name"), [("gradcam", "GradCAM"), ("layercam", "LayerCAM")])
def test_finercam_matches_torchcam(resnet, base, name):
    torchcam = need("torchcam.methods")
    model, x = resnet
    targets = [3, 500]
    options = {"alpha": 0.6, "weighting": "mean"}
    exp = camlens.explain(model, x, method="finercam", base=base, target=targets, **options)
    cls = getattr(torchcam, name)
    with torchcam.FinerCAM(model, "layer4", tuple(x.shape[1:]), base_method=cls) as cam:
        expected = cam(targets, model(x), normalized=False)[0]
    assert float((exp.raw.clamp_min(0) - expected).abs().max()) < 1e-4
    with torchcam.FinerCAM(model, "layer4", tuple(x.shape[1:]), num_references=1) as cam:
        expected = cam(targets, model(x), comparison_idx=[8], normalized=False)[0]
    exp = camlens.explain(model, x, method="finercam", target=targets, compare=8, **options)
    assert float((exp.raw.clamp_min(0) - expected).abs().max()) < 1e-4


def test_finercam_reports_the_class_and_its_neighbours(resnet):
    model, x = resnet
    exp = camlens.explain(model, x, method="finercam", k=2)
    plain = camlens.explain(model, x, method="gradcam")
    assert torch.equal(exp.targets, plain.targets)
    assert torch.allclose(exp.scores, plain.scores) and torch.allclose(exp.probs, plain.probs)
    logits = model(x).detach()
    assert torch.equal(exp.extra["compared"], nearest_classes(logits, exp.targets, 2))
    assert exp.extra["compared"].shape == (2, 2)


def test_finercam_alpha_zero_is_the_base_method(resnet):
    """alpha = 0 and one comparison class: the contrast is y_c itself."""
    model, x = resnet
    exp = camlens.explain(model, x, method="finercam", alpha=0, k=1, base="layercam")
    plain = camlens.explain(model, x, method="layercam")
    assert float((exp.raw - plain.raw).abs().max()) < 1e-5


def test_nearest_classes_excludes_the_target_and_caps_k():
    logits = torch.tensor([[0.0, 5.0, 4.0, 9.0], [1.0, 1.5, 3.0, 0.0]])
    picked = nearest_classes(logits, torch.tensor([1, 0]), 9)
    assert picked.tolist() == [[2, 3, 0], [1, 3, 2]]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"base": "scorecam"}, "base must name a gradient CAM method"),
        ({"base": "nope"}, "unknown method 'nope'"),
        ({"alpha": -1.0}, "alpha must be a finite number >= 0"),
        ({"k": 0}, "k must be a positive int"),
        ({"weighting": "max"}, "weighting must be one of softmax, mean"),
    ],
)
def test_finercam_options_are_checked(small_cnn, options, message):
    with pytest.raises(camlens.CamlensValueError, match=message):
        camlens.FinerCAM(small_cnn, **options)


def test_finercam_refuses_what_it_cannot_contrast(small_cnn, images):
    with pytest.raises(camlens.CamlensValueError, match="target must be None, an int"):
        camlens.explain(small_cnn, images, method="finercam", target=lambda out: out[:, 0])
    with pytest.raises(camlens.CamlensValueError, match="must not hold the explained class"):
        camlens.explain(small_cnn, images, method="finercam", target=1, compare=[1, 2])
    with pytest.raises(camlens.CamlensTypeError, match="compare must be a class index"):
        camlens.FinerCAM(small_cnn, compare="dog")


@pytest.mark.parametrize("base", ["gradcam", "layercam"])
def test_refinecam_matches_pytorch_grad_cam(resnet, base):
    pgc = need("pytorch_grad_cam")
    model, x = resnet
    exp = camlens.explain(model, x, method="refinecam", base=base, target=[3, 500])
    targets = [pgc.utils.model_targets.ClassifierOutputTarget(t) for t in (3, 500)]
    layers = [getattr(model, name) for name in STAGES]
    cam = pgc.RefineCAM(model, layers, base_method=getattr(pgc, PGC[base]))
    expected = torch.from_numpy(cam(x, targets=targets))
    assert exp.layer == "+".join(STAGES)
    assert float((exp.maps - expected).abs().max()) < 1e-4


@pytest.mark.parametrize("base", ["gradcam", "layercam"])
def test_refinecam_matches_torchcam(resnet, base):
    torchcam = need("torchcam.methods")
    model, x = resnet
    exp = camlens.explain(
        model, x, method="refinecam", base=base, layer=STAGES, resolution="layer", target=[3, 500]
    )
    cls = getattr(torchcam, TORCHCAM[base])
    with torchcam.RefineCAM(model, STAGES, tuple(x.shape[1:]), base_method=cls) as cam:
        expected = cam([3, 500], model(x), normalized=False)[0]
    assert exp.raw.shape == (2, 12, 12)
    assert float((exp.raw - expected).abs().max()) < 1e-4


def test_refine_is_the_product_of_the_scaled_maps():
    coarse = torch.tensor([[[-1.0, 3.0], [1.0, 0.0]]])
    fine = torch.arange(16.0).reshape(1, 4, 4)
    product = refine([coarse, fine], None)
    scaled = torch.nn.functional.interpolate(
        (coarse.clamp_min(0) / 3)[:, None], (4, 4), mode="bilinear", align_corners=False
    )[:, 0]
    torch.testing.assert_close(product, scaled * fine / 15)
    upsampled = torch.nn.functional.interpolate(
        coarse.clamp_min(0)[:, None], (4, 4), mode="bilinear", align_corners=False
    )[:, 0]
    torch.testing.assert_close(refine([coarse, fine], (4, 4)), minmax(upsampled) * fine / 15)


def test_refinecam_one_layer_is_the_base_method(small_cnn, images):
    plain = camlens.explain(small_cnn, images, method="gradcam")
    exp = camlens.explain(small_cnn, images, method="refinecam", base="gradcam", layer=plain.layer)
    assert float((exp.maps - plain.maps).abs().max()) < 1e-5


def test_refinecam_options_are_checked(small_cnn):
    with pytest.raises(camlens.CamlensValueError, match="resolution must be one of input, layer"):
        camlens.RefineCAM(small_cnn, resolution="output")
    with pytest.raises(camlens.CamlensValueError, match="base must name a CAM method"):
        camlens.RefineCAM(small_cnn, base="saliency")
    with pytest.raises(camlens.CamlensValueError, match="uses no gradients"):
        camlens.RefineCAM(small_cnn, base="eigencam", smooth=2)


def test_refinecam_smooths_and_augments(small_cnn, images):
    for options in ({"smooth": 2}, {"augment": True}):
        exp = camlens.explain(small_cnn, images, method="refinecam", **options)
        assert exp.maps.shape == images.shape[:1] + images.shape[2:]
        assert torch.isfinite(exp.maps).all()
