"""Layer resolution: "auto" on torchvision's families, names, modules, lists."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision
from needs import need
from toy_models import SmallCNN

import camlens

# (model, input size, expected auto layer, layout kind, grid)
AUTO = [
    ("resnet18", 64, "layer4", "nchw", (2, 2)),
    ("resnet50", 64, "layer4", "nchw", (2, 2)),
    ("vgg16", 64, "features.29", "nchw", (4, 4)),  # not avgpool / the last max-pool
    ("densenet121", 64, "features", "nchw", (2, 2)),
    ("mobilenet_v3_large", 64, "features", "nchw", (2, 2)),
    ("efficientnet_b0", 64, "features", "nchw", (2, 2)),
    ("convnext_tiny", 64, "features", "nchw", (2, 2)),
    ("regnet_y_400mf", 64, "trunk_output", "nchw", (2, 2)),
    ("vit_b_16", 64, "encoder.layers.encoder_layer_11.ln_1", "tokens", (4, 4)),
    # the last block's input norm, as for every attention model (not the final norm)
    ("swin_t", 64, "features.7.1.norm1", "nhwc", (2, 2)),
]


@pytest.mark.parametrize(("arch", "size", "name", "kind", "grid"), AUTO)
def test_auto_layer(arch, size, name, kind, grid):
    torch.manual_seed(0)
    extra = {"image_size": size} if arch.startswith("vit") else {}
    model = torchvision.models.get_model(arch, num_classes=3, **extra).eval()
    if arch.startswith("vit"):  # torchvision initialises the ViT head to zero
        nn.init.normal_(model.heads.head.weight)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    infos, auto = camlens.layers(model, x)
    assert auto == name
    info = next(i for i in infos if i.name == auto)
    assert (info.layout.kind, info.layout.grid) == (kind, grid)
    assert not any("Pool" in i.kind or "Dropout" in i.kind for i in infos)
    if arch in ("vit_b_16", "swin_t"):
        exp = camlens.explain(model, x, method="gradcam")
        assert exp.layer == name and exp.raw.shape == (1, *grid)
        assert exp.maps.shape == (1, size, size) and exp.maps.max() == 1


def test_vit_class_token_is_dropped():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(image_size=32, num_classes=2).eval()
    nn.init.normal_(model.heads.head.weight)
    x = torch.randn(1, 3, 32, 32)
    capture = camlens.backends.adapter_for(model).capture(
        x, ["encoder.layers.encoder_layer_11.ln_1"], 0
    )
    tokens = {}
    handle = model.encoder.layers.encoder_layer_11.ln_1.register_forward_hook(
        lambda m, a, o: tokens.setdefault("t", o.detach())
    )
    model(x)
    handle.remove()
    expected = tokens["t"][:, 1:, :].transpose(1, 2).reshape(1, 768, 2, 2)
    torch.testing.assert_close(capture.activations[0], expected)


def test_names_modules_and_lists(small_cnn, images):
    by_name = camlens.explain(small_cnn, images, layer="features.2")
    by_module = camlens.explain(small_cnn, images, layer=small_cnn.features[2])
    torch.testing.assert_close(by_name.maps, by_module.maps)
    assert by_module.layer == "features.2"
    fused = camlens.explain(small_cnn, images, layer=["features.0", "features"])
    assert fused.layer == "features.0+features"
    assert fused.raw.shape == (2, 32, 32)
    assert set(fused.extra["layers"]) == {"features.0", "features"}


def test_unknown_layer_lists_close_candidates(small_cnn, images):
    with pytest.raises(camlens.CamlensValueError) as error:
        camlens.explain(small_cnn, images, layer="feature.2")
    assert str(error.value).startswith(
        "layer 'feature.2' is not a module of SmallCNN; close candidates: features.2"
    )


def test_non_spatial_layer_is_refused(small_cnn, images):
    with pytest.raises(camlens.CamlensValueError, match=r"'fc' outputs shape \(2, 5\), not a spat"):
        camlens.explain(small_cnn, images, layer="fc")


def test_foreign_module_is_refused(small_cnn, images):
    with pytest.raises(camlens.CamlensValueError, match="not a submodule of SmallCNN"):
        camlens.explain(small_cnn, images, layer=nn.Conv2d(3, 3, 1))


def test_no_spatial_layer_at_all():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).eval()
    with pytest.raises(camlens.CamlensValueError, match="found no layer of Sequential"):
        camlens.explain(model, torch.randn(1, 3, 2, 2))


def test_constant_feature_map_gives_zeros_not_nan(images):
    model = SmallCNN().eval()
    with torch.no_grad():
        model.features[3].weight.zero_()  # BatchNorm scale 0: a constant map of its bias
    for method in camlens.methods(model):
        exp = camlens.explain(model, images, method=method)
        assert not exp.maps.isnan().any(), method
        assert exp.maps.abs().max() == 0, method


def test_layers_listing(small_cnn, images):
    infos, auto = camlens.layers(small_cnn, images)
    assert [i.name for i in infos] == ["features.1", "features.2", "features"]
    assert auto == "features"
    assert [i.kind for i in infos] == ["ReLU", "Conv2d", "Sequential"]
    assert infos[2].shape == (1, 16, 16, 16)


TIMM_AUTO = [
    # timm's BatchNormAct2d hands its output on through an Identity first
    ("efficientnet_b0", {}, "bn2", "nchw", (2, 2)),
    # the qkv projection (3x width) also receives gradient: the block's norm1 is the map
    ("vit_tiny_patch16_224", {"img_size": 64}, "blocks.11.norm1", "tokens", (4, 4)),
    # class and distillation tokens: two prefix tokens dropped
    ("deit_tiny_distilled_patch16_224", {"img_size": 64}, "blocks.11.norm1", "tokens", (4, 4)),
    # mean-pooled tokens: the final norm receives gradient too, the block's input norm is chosen
    (
        "beit_base_patch16_224",
        {"img_size": 64, "patch_size": 16, "depth": 2, "embed_dim": 32, "num_heads": 2},
        "blocks.1.norm1",
        "tokens",
        (4, 4),
    ),
    (
        "swin_tiny_patch4_window7_224",
        {"img_size": 64, "window_size": 4, "depths": (1, 1), "num_heads": (1, 2), "embed_dim": 16},
        "layers.1.blocks.0.norm1",
        "nhwc",
        (8, 8),
    ),
]


@pytest.mark.parametrize(("arch", "kwargs", "name", "kind", "grid"), TIMM_AUTO)
def test_auto_layer_on_timm(arch, kwargs, name, kind, grid):
    timm = need("timm")
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=3, **kwargs).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    infos, auto = camlens.layers(model, x)
    assert auto == name
    info = next(i for i in infos if i.name == auto)
    assert (info.layout.kind, info.layout.grid) == (kind, grid)
    assert info.layout.prefix == (2 if "distilled" in arch else 1 if kind == "tokens" else 0)


def _hf_models():
    """Tiny Hugging Face attention classifiers from their configs (random weights, no download)."""
    t = need("transformers")
    vit = dict(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=2, num_labels=3)
    vit.update(num_attention_heads=2, intermediate_size=64)
    swin = dict(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2])
    return {
        "vit": (t.ViTForImageClassification, t.ViTConfig(**vit)),
        "deit": (t.DeiTForImageClassificationWithTeacher, t.DeiTConfig(**vit)),
        "beit": (t.BeitForImageClassification, t.BeitConfig(use_mean_pooling=True, **vit)),
        "swin": (t.SwinForImageClassification, t.SwinConfig(window_size=4, num_labels=3, **swin)),
    }


HF_AUTO = [
    ("vit", "vit.layers.1.layernorm_before", (4, 4), 1),  # not attention.v_proj
    ("deit", "deit.layers.1.layernorm_before", (4, 4), 2),
    ("beit", "beit.layers.1.layernorm_before", (4, 4), 1),
    ("swin", "swin.encoder.layers.1.blocks.0.layernorm_before", (8, 8), 0),
]


@pytest.mark.parametrize(("family", "name", "grid", "prefix"), HF_AUTO)
def test_auto_layer_on_hugging_face(family, name, grid, prefix):
    build, config = _hf_models()[family]
    torch.manual_seed(0)
    model = build(config).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    infos, auto = camlens.layers(model, x)
    assert auto == name
    info = next(i for i in infos if i.name == auto)
    assert (info.layout.grid, info.layout.prefix) == (grid, prefix)
    exp = camlens.explain(model, x, method="gradcam")
    assert exp.layer == name and exp.raw.shape == (1, *grid) and exp.maps.max() == 1
