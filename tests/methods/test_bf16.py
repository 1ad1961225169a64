"""Reduced precision (issue 23): bf16 autocast maps against float32 maps on ResNet-50,
DenseNet-121, a two-stage ConvNeXt (ConvNeXt-Tiny's blocks) and a small ViT (random weights,
random batch-norm statistics, a batch of 2 at 64 px), against the bound correlation >= 0.99 and
max difference <= 0.05, for the gradient CAM family. One forward and backward per network and
precision: the family's maps all come from that capture. The members that miss the bound on a
network are pinned (:data:`FAILING`): ``precision="auto"``'s probe keeps them in float32 there.
Every method's figures: docs/benchmarks.md (benchmarks/bench_bf16.py)."""

from __future__ import annotations

import pytest
import torch
from test_pixel import random_batchnorm

import camlens
from camlens.maps import finalize
from camlens.methods import gradient, precision, variants
from camlens.methods._registry import get
from camlens.methods.precision import PROBES, agreement

TARGETS = [3, 7]
#: the explained layer of each network (the ViT's: its last encoder block's tokens)
NETS = {
    "resnet50": "layer4",
    "densenet121": "features",
    "convnext": "features",
    "vit": "encoder.layers.encoder_layer_1",
}
FAMILY = {
    "gradcam": gradient.gradcam,
    "gradcam++": gradient.gradcam_plus_plus,
    "xgradcam": gradient.xgradcam,
    "hirescam": gradient.hirescam,
    "layercam": gradient.layercam,
    "eigengradcam": variants.eigengradcam,
    "gradcam-elementwise": variants.gradcam_elementwise,
}

#: (correlation, max difference) of the family members that miss the bound, by network
FAILING = {"densenet121": {"gradcam", "xgradcam"}}  # (0.9931, 0.0979) and (0.6095, 0.6651)


def network(name: str) -> torch.nn.Module:
    """The random-weight network ``name`` (seed 0), in eval mode."""
    import torchvision

    torch.manual_seed(0)
    if name == "vit":
        model = torchvision.models.VisionTransformer(
            image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
        )
        torch.nn.init.normal_(model.heads.head.weight)  # torchvision zero-initialises the head
        return model.eval()
    if name == "convnext":  # ConvNeXt-Tiny's blocks, two stages of one block (28M weights: slow)
        convnext = torchvision.models.convnext
        stages = [convnext.CNBlockConfig(32, 64, 1), convnext.CNBlockConfig(64, None, 1)]
        return convnext.ConvNeXt(stages).eval()
    return random_batchnorm(getattr(torchvision.models, name)()).eval()


@pytest.fixture(scope="module")
def built() -> dict:
    """The networks built so far (each once per module)."""
    return {}


@pytest.mark.parametrize("name", list(NETS))
def test_bf16_maps_agree_with_float32(name, built):
    if name not in built:
        built[name] = network(name)
    model = built[name]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)).clamp(-2, 2)
    steps = {}
    for chosen in ("fp32", "bf16"):
        explainer = get("gradcam")(model, layer=NETS[name], precision=chosen)
        assert explainer.precision_used() == chosen
        steps[chosen] = explainer._pass(x, TARGETS).capture
    logits = steps["bf16"].logits  # the forward ran under autocast: bfloat16 values
    assert torch.equal(logits, logits.bfloat16().float())
    assert not torch.equal(steps["fp32"].logits, logits)
    failing = {}
    for method, function in FAMILY.items():
        maps = [
            finalize(function(c.activations[0], c.gradients[0]), (64, 64))
            for c in (steps["fp32"], steps["bf16"])
        ]
        correlation, worst = agreement(*maps)
        if correlation < 0.99 or worst > 0.05:
            failing[method] = (round(correlation, 4), round(worst, 4))
    # on such a model, precision="auto"'s probe keeps them in float32
    assert set(failing) == FAILING.get(name, set())


def test_auto_uses_the_devices_measurement(monkeypatch):
    """``auto`` runs fp32 where the device's bf16 is slow (``bf16_ok``), the probe's choice
    elsewhere, and fp32 for methods that are not ``bf16_auto`` or do not autocast."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 3),
    ).eval()  # fmt: skip
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    measured = camlens.backends.adapter_for(model).bf16_ok()  # this VM (no bf16 units): False
    used = camlens.explain(model, x, "gradcam", precision="auto").extra["precision"]
    assert used == (PROBES[model][("gradcam", "cpu", (1, 3, 16, 16))] if measured else "fp32")
    adapter = camlens.backends.adapter_for(model)
    monkeypatch.setattr(type(adapter), "bf16_ok", lambda self: True)
    for method in ("shapleycam", "xgradcam", "saliency"):  # not bf16_auto, or no autocast
        assert camlens.explain(model, x, method, precision="auto").extra["precision"] == "fp32"
    assert camlens.explain(model, x, "saliency", precision="bf16").extra["precision"] == "bf16"


def test_auto_probes_once_per_shape_and_keeps_fp32_when_maps_disagree(monkeypatch):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 3),
    ).eval()  # fmt: skip
    adapter = camlens.backends.adapter_for(model)
    monkeypatch.setattr(type(adapter), "bf16_ok", lambda self: True)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    explainer = get("gradcam")(model, precision="auto")
    first = explainer(x).extra["precision"]
    assert PROBES[model] == {("gradcam", "cpu", (2, 3, 16, 16)): first}
    monkeypatch.setattr(precision, "AGREEMENT", (1.01, -1.0))  # no map can agree
    assert explainer(x).extra["precision"] == first  # cached: no second probe
    assert explainer(x[:1]).extra["precision"] == "fp32"
    assert PROBES[model][("gradcam", "cpu", (1, 3, 16, 16))] == "fp32"
    assert camlens.explain(model, x, "eigencam", precision="bf16").extra["precision"] == "fp32"
    with pytest.raises(camlens.CamlensValueError, match="precision must be one of"):
        camlens.explain(model, x, "gradcam", precision="half")
