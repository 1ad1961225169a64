"""Capturing a vision transformer's attention: timm, Hugging Face and torchvision blocks, in the
autograd graph, every setting restored (also after an error), the logits unchanged."""

from __future__ import annotations

import pytest
import torch
from toy_models import SmallCNN, hf_vit, tiny_vit, torchvision_vit

import camlens
from camlens.backends.attention import (
    attend,
    attention_blocks,
    capturing,
    patch_grid,
    prefix_tokens,
)

MODELS = {"timm": tiny_vit, "hf": hf_vit, "torchvision": torchvision_vit}
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def settings(model) -> list:
    """What capturing changes: timm's fused_attn, HF's attention implementation, an instance
    forward on nn.MultiheadAttention, and the hooks."""
    found = []
    for block in attention_blocks(model):
        module = block.module
        found += [
            getattr(module, "fused_attn", None),
            getattr(getattr(module, "config", None), "_attn_implementation", None),
            "forward" in vars(module),
            len(module._forward_hooks),
        ]
        if hasattr(module, "attn_drop"):
            found.append(len(module.attn_drop._forward_hooks))
    return found


def logits(model, x):
    output = model(x)
    return output.logits if hasattr(output, "logits") else output


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_attention_is_captured_in_the_graph_and_the_logits_unchanged(kind):
    model = MODELS[kind]()
    blocks = attention_blocks(model)
    assert len(blocks) == 2
    before = settings(model)
    with torch.no_grad():
        fused = logits(model, X)
    with capturing(blocks) as seen:
        out = logits(model, X)
        assert settings(model) != before or kind == "timm" and not before[0]
    assert settings(model) == before
    torch.testing.assert_close(out, fused, atol=1e-5, rtol=1e-5)
    assert [tuple(a.shape) for a in seen] == [(2, 2, 17, 17)] * 2
    torch.testing.assert_close(seen[0].sum(-1), torch.ones(2, 2, 17))
    grads = torch.autograd.grad(out[:, 1].sum(), seen)
    assert all(g.shape == a.shape and g.abs().sum() > 0 for g, a in zip(grads, seen))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_settings_are_restored_after_an_error(kind):
    model = MODELS[kind]()
    before = settings(model)
    with pytest.raises(RuntimeError, match="boom"), capturing(attention_blocks(model)):
        raise RuntimeError("boom")
    assert settings(model) == before


def test_frozen_weights_still_give_attention_gradients():
    model = tiny_vit().requires_grad_(False)
    adapter = camlens.backends.adapter_for(model)
    attended = attend(adapter, X, [1, 3], attention_blocks(model), gradients=True)
    assert attended.gradients is not None and attended.gradients[1].abs().sum() > 0
    assert attended.prefix == 1 and attended.grid == (4, 4)
    assert attended.capture.target.indices.tolist() == [1, 3]


def test_prefix_tokens_and_grid():
    import timm

    registers = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=1,
        reg_tokens=4,
        num_classes=2,
    )
    assert prefix_tokens(registers) == 5
    distilled = timm.create_model(
        "deit_tiny_distilled_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=1,
        num_classes=2,
    )
    assert prefix_tokens(distilled) == 2
    assert prefix_tokens(hf_vit()) == prefix_tokens(torchvision_vit()) == 1
    assert patch_grid(1 + 8, 1, (32, 64)) == (2, 4)
    with pytest.raises(camlens.CamlensValueError, match="form no grid"):
        patch_grid(1 + 7, 1, (32, 32))


def test_models_without_attention_have_no_blocks():
    assert attention_blocks(SmallCNN()) == [] and attention_blocks("not a model") == []
