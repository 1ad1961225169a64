"""The registry, and every registered method on one model (a new method is tested the day it is
added)."""

from __future__ import annotations

import pytest
import torch

import camlens

CAM_FAMILY = ["cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"]


def test_methods_are_listed_in_order():
    assert camlens.methods()[: len(CAM_FAMILY)] == CAM_FAMILY


def test_unknown_method_lists_the_valid_ones(small_cnn, images):
    with pytest.raises(camlens.CamlensValueError) as error:
        camlens.explain(small_cnn, images, method="gradcamm")
    assert str(error.value).startswith("unknown method 'gradcamm'; valid methods: cam, gradcam,")


def test_aliases(small_cnn, images):
    a = camlens.explain(small_cnn, images, method="Grad-CAM")
    b = camlens.explain(small_cnn, images, method="grad_cam")
    assert a.method == b.method == "gradcam"
    torch.testing.assert_close(a.maps, b.maps)


@pytest.mark.parametrize("method", camlens.methods())
def test_every_method_honours_the_contract(small_cnn, vit, images, method):
    if not camlens.methods._registry.get(method).applies_to(small_cnn):
        small_cnn = vit  # the attention methods: a tiny timm ViT (see test_attention_methods...)
    exp = camlens.explain(small_cnn, images, method=method, target=[1, 3])
    assert exp.method == method
    assert exp.maps.shape == (2, 32, 32) and exp.maps.dtype == torch.float32
    assert exp.maps.device.type == "cpu"
    # max 1 per image, or zeros where the raw map has no positive value (occlusion here: zeroing
    # any window of these images raises the small CNN's target scores)
    assert exp.maps.min() >= 0
    positive = (exp.raw.flatten(1).amax(dim=1) > 0).float()
    assert torch.equal(exp.maps.flatten(1).amax(dim=1), positive)
    assert exp.raw.dtype == torch.float32 and exp.raw.ndim == 3
    assert exp.targets.dtype == torch.int64 and exp.targets.tolist() == [1, 3]
    logits = small_cnn(images).detach()
    torch.testing.assert_close(exp.scores, logits[[0, 1], [1, 3]])
    torch.testing.assert_close(exp.probs, logits.softmax(1)[[0, 1], [1, 3]])
    reusable = camlens.methods._registry.get(method)(small_cnn)
    torch.testing.assert_close(reusable(images, target=[1, 3]).maps, exp.maps)


def test_attention_methods_apply_to_transformers_only(small_cnn, vit):
    attention = ["rollout", "transformer-attribution", "legrad"]
    assert [m for m in camlens.methods() if m not in camlens.methods(small_cnn)] == attention
    assert camlens.methods(vit) == camlens.methods()


def test_classes_are_exported():
    assert camlens.GradCAM.name == "gradcam"
    assert camlens.GradCAMPlusPlus.name == "gradcam++"
    assert "arXiv:1610.02391" in camlens.GradCAM.paper
    assert r"\alpha_k" in camlens.GradCAM.__doc__
