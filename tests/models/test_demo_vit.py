"""The bundled demo vision transformer (``camlens.load_model("demo-vit")``, camlens:smallvit):
small, as accurate as its validation.json says, and every method that applies to it runs,
the attention methods included."""

from __future__ import annotations

import json

import pytest
import torch

import camlens
from camlens.datasets import cluttered_digits, read_boxes
from camlens.models.checkpoint import demo_path

MODEL = camlens.load_model("demo-vit")
SAMPLES, LABELS, BOXES = read_boxes(demo_path() / "samples" / "boxes.csv")


def test_bundle_is_small_and_shares_the_demo_samples():
    assert (demo_path("demo-vit") / "model.safetensors").stat().st_size < 600_000
    assert not (demo_path("demo-vit") / "samples").exists()
    assert MODEL.labels == [str(d) for d in range(10)] and MODEL.input_size == (64, 64)
    assert MODEL.architecture["name"] == "smallvit" and MODEL.cam_layer == "backbone.grid"


def test_held_out_accuracy_is_what_validation_json_says():
    validation = json.loads((demo_path("demo-vit") / "validation.json").read_text())
    x, y, _ = cluttered_digits(300, seed=1, digits="test")  # the validation recipe, 300 of them
    with torch.no_grad():
        accuracy = float((MODEL(x).argmax(1) == y).float().mean())
    assert abs(accuracy - validation["accuracy"]) < 0.06


def test_every_method_that_applies_runs_on_two_samples():
    methods = camlens.methods(MODEL)
    assert {"cam", "gradcam", "rollout", "transformer-attribution", "legrad"} <= set(methods)
    assert methods == camlens.methods()  # the ViT's GAP head leaves no method out
    x, _ = MODEL.load_images(SAMPLES[:2])
    for method in methods:
        torch.manual_seed(0)
        maps = camlens.explain(MODEL, x, method=method).maps
        assert maps.shape == (2, 64, 64) and bool(torch.isfinite(maps).all()), method


def test_cam_on_the_token_grid_is_gradcam_and_sums_to_the_logit():
    x, _ = MODEL.load_images(SAMPLES[:4])
    cam = camlens.explain(MODEL, x, method="cam", target=LABELS[:4].tolist())
    grad = camlens.explain(MODEL, x, method="gradcam", target=LABELS[:4].tolist())
    assert cam.layer == grad.layer == "backbone.grid"
    with torch.no_grad():
        logits = MODEL(x)[torch.arange(4), LABELS[:4]] - MODEL.fc.bias[LABELS[:4]]
    torch.testing.assert_close(cam.raw.mean(dim=(1, 2)), logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cam.maps, grad.maps, rtol=0, atol=1e-4)


@pytest.mark.parametrize("method", ["rollout", "transformer-attribution", "legrad"])
def test_attention_methods_read_every_block_without_a_class_token(method):
    x, _ = MODEL.load_images(SAMPLES[:2])
    exp = camlens.explain(MODEL, x, method=method)
    blocks = [f"backbone.block{i}.attention" for i in range(1, 5)]
    assert exp.layer == "+".join(blocks)
    assert exp.raw.shape == (2, 8, 8)


def _block_outputs(x: torch.Tensor) -> tuple[torch.Tensor, list, list]:
    """The logits, each block's output tokens and each block's head-mean attention (B, T, T)."""
    tokens: list = []
    attentions: list = []
    handles = []
    for i in range(1, 5):
        block = MODEL.backbone.get_submodule(f"block{i}")
        handles.append(block.register_forward_hook(lambda m, a, out: tokens.append(out)))
        handles.append(
            block.attention.register_forward_hook(lambda m, a, out: attentions.append(out[1]))
        )
    try:
        with torch.no_grad():
            logits = MODEL(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, tokens, attentions


def test_legrad_projection_of_the_last_block_is_the_models_logits():
    from camlens.backends.attention import projection

    x, _ = MODEL.load_images(SAMPLES[:3])
    logits, tokens, _ = _block_outputs(x)
    project = projection(MODEL)
    assert project is not None
    with torch.no_grad():
        torch.testing.assert_close(project(tokens[-1]), logits)


def test_rollout_without_a_class_token_is_the_mean_row_of_the_attention_product():
    x, _ = MODEL.load_images(SAMPLES[:2])
    _, _, attentions = _block_outputs(x)  # nn.MultiheadAttention's own head-mean weights
    result = None
    for attention in attentions:
        step = 0.5 * (attention.double() + torch.eye(64, dtype=torch.float64))
        step = step / step.sum(dim=-1, keepdim=True)
        result = step if result is None else step @ result
    assert result is not None
    expected = result.mean(dim=1).reshape(2, 8, 8).float()
    raw = camlens.explain(MODEL, x, method="rollout").raw
    torch.testing.assert_close(raw, expected, rtol=1e-4, atol=1e-6)
