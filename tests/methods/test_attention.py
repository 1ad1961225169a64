"""Rollout and the Chefer relevance against float64 references: the timm ViT's attention
recomputed by hand (no hooks), Hugging Face's own ``output_attentions`` and torchvision's
``need_weights``; the refusals on models without attention."""

from __future__ import annotations

import copy

import pytest
import torch
from toy_models import SmallCNN, hf_vit, tiny_vit, torchvision_vit

import camlens

X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
TARGETS = [0, 4, 2]


def timm_by_hand(model, x, per_block=None):
    """A timm ViT run block by block in float64 with the attention written out: the logits and
    every block's attention (B, H, T, T), in the graph; ``per_block`` collects each block's
    output tokens scored by the final norm and head (LeGrad's s^l)."""
    model = copy.deepcopy(model).double()
    tokens = model.norm_pre(model._pos_embed(model.patch_embed(x.double())))
    attentions = []
    for block in model.blocks:
        attn = block.attn
        h = block.norm1(tokens)
        batch, count, width = h.shape
        qkv = attn.qkv(h).reshape(batch, count, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = (q @ k.transpose(-2, -1) * attn.scale).softmax(dim=-1)
        attentions.append(a)
        mixed = attn.proj((a @ v).transpose(1, 2).reshape(batch, count, width))
        tokens = tokens + block.ls1(mixed)
        tokens = tokens + block.ls2(block.mlp(block.norm2(tokens)))
        if per_block is not None:
            per_block.append(model.forward_head(model.norm(tokens)))
    return model.forward_head(model.norm(tokens)), attentions


def rollout_reference(attentions, fusion="mean"):
    """Abnar & Zuidema in float64: 0.5 (fused + I), rows normalised, multiplied through."""
    result = torch.eye(attentions[0].shape[-1], dtype=torch.float64)
    for a in attentions:
        fused = {"mean": a.mean(1), "max": a.amax(1), "min": a.amin(1)}[fusion]
        step = 0.5 * fused + 0.5 * torch.eye(a.shape[-1], dtype=torch.float64)
        result = (step / step.sum(-1, keepdim=True)) @ result
    return result


def chefer_reference(attentions, gradients):
    """Chefer et al. in float64: R = I, R += mean_h((grad A)^+) R."""
    result = torch.eye(attentions[0].shape[-1], dtype=torch.float64)
    for a, g in zip(attentions, gradients):
        result = result + (g * a).clamp_min(0).mean(1) @ result
    return result


def class_row(relevance, grid=(4, 4)):
    return relevance[:, 0, 1:].reshape(relevance.shape[0], *grid).float()


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_equals_the_float64_reference_on_timm(fusion):
    model = tiny_vit()
    logits, attentions = timm_by_hand(model, X)
    torch.testing.assert_close(logits.float(), model(X), atol=1e-5, rtol=1e-5)
    exp = camlens.explain(model, X, method="rollout", target=TARGETS, head_fusion=fusion)
    expected = class_row(rollout_reference([a.detach() for a in attentions], fusion))
    assert (exp.raw - expected).abs().max() < 1e-5
    assert exp.maps.shape == (3, 32, 32) and exp.layer == "blocks.0.attn+blocks.1.attn"
    assert exp.targets.tolist() == TARGETS


def test_transformer_attribution_equals_the_float64_reference_on_timm():
    model = tiny_vit()
    logits, attentions = timm_by_hand(model, X)
    gradients = torch.autograd.grad(logits[range(3), TARGETS].sum(), attentions)
    expected = class_row(chefer_reference([a.detach() for a in attentions], gradients))
    exp = camlens.explain(model, X, method="transformer-attribution", target=TARGETS)
    assert (exp.raw - expected).abs().max() < 1e-5
    other = camlens.explain(model, X, method="transformer-attribution", target=[1, 1, 1])
    assert (other.raw - exp.raw).abs().max() > 1e-4  # the target matters


def test_discard_ratio_zeroes_the_lowest_entries_but_the_class_tokens_own():
    from camlens.methods.attention import discard

    fused = torch.tensor([[[0.25, 0.5], [0.375, 0.125]]])
    assert discard(fused, 0.5).tolist() == [[[0.25, 0.5], [0.375, 0.0]]]
    assert discard(fused, 0.75).tolist() == [[[0.25, 0.5], [0.0, 0.0]]]
    exp = camlens.explain(tiny_vit(), X, method="rollout", discard_ratio=0.9)
    assert torch.isfinite(exp.raw).all()


def test_rollout_and_chefer_on_hugging_face_agree_with_its_own_attentions():
    model = hf_vit()
    double = copy.deepcopy(model).double()
    double.set_attn_implementation("eager")
    output = double(X.double(), output_attentions=True)
    attentions = list(output.attentions)
    gradients = torch.autograd.grad(output.logits[range(3), [0, 2, 1]].sum(), attentions)
    rollout = camlens.explain(model, X, method="rollout")
    assert (
        rollout.raw - class_row(rollout_reference([a.detach() for a in attentions]))
    ).abs().max() < 1e-5
    chefer = camlens.explain(model, X, method="transformer-attribution", target=[0, 2, 1])
    expected = class_row(chefer_reference([a.detach() for a in attentions], gradients))
    assert (chefer.raw - expected).abs().max() < 1e-5
    assert model.config._attn_implementation == "sdpa"


def test_rollout_on_torchvision_agrees_with_need_weights():
    model = torchvision_vit()
    double = copy.deepcopy(model).double()
    attentions = []

    def weights(module, args):
        attentions.append(
            module.forward(*args[:1] * 3, need_weights=True, average_attn_weights=False)[1]
        )

    for layer in double.encoder.layers:
        layer.self_attention.register_forward_pre_hook(weights)
    double(X.double())
    exp = camlens.explain(model, X, method="rollout", layer="auto")
    assert (exp.raw - class_row(rollout_reference(attentions))).abs().max() < 1e-5
    chosen = camlens.explain(
        model, X, method="rollout", layer="encoder.layers.encoder_layer_0.self_attention"
    )
    assert (chosen.raw - class_row(rollout_reference(attentions[:1]))).abs().max() < 1e-5


@pytest.mark.parametrize("method", ["rollout", "transformer-attribution", "legrad"])
def test_models_without_attention_are_refused_before_running(method):
    model = SmallCNN()
    model.forward = None  # never called
    with pytest.raises(camlens.CamlensValueError, match=f"method '{method}' needs a vision"):
        camlens.explain(model, X, method=method)


def test_unknown_blocks_and_options_are_refused():
    with pytest.raises(camlens.CamlensValueError, match="they are: blocks.0.attn, blocks.1"):
        camlens.explain(tiny_vit(), X, method="rollout", layer="blocks.0")
    with pytest.raises(camlens.CamlensValueError, match="head_fusion must be one of"):
        camlens.Rollout(tiny_vit(), head_fusion="median")
    with pytest.raises(camlens.CamlensValueError, match=r"discard_ratio must be in \[0, 1\)"):
        camlens.Rollout(tiny_vit(), discard_ratio=1.0)


def test_legrad_agrees_with_torchcam_on_torchvision():
    import torchvision
    from torchcam.methods import LeGrad

    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=5,
    ).eval()  # fmt: skip
    torch.nn.init.normal_(model.heads.head.weight)  # torchvision zero-initialises the head
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    exp = camlens.explain(model, x, method="legrad", target=TARGETS)
    with LeGrad(model, list(model.encoder.layers)) as reference:
        expected = reference(TARGETS, model(x), normalized=False)[0]
    assert (exp.raw - expected).abs().max() < 1e-4
    assert "forward" not in vars(model.encoder.layers[0].self_attention)


def test_legrad_equals_the_float64_formula_on_timm():
    model = tiny_vit()
    scores = []
    _, attentions = timm_by_hand(model, X, scores)
    maps = []
    for score, attention in zip(scores, attentions):
        (gradient,) = torch.autograd.grad(
            score[range(3), TARGETS].sum(), attention, retain_graph=True
        )
        maps.append(gradient.clamp_min(0).mean(dim=(1, 2))[:, 1:])
    expected = torch.stack(maps).mean(0).reshape(3, 4, 4)
    exp = camlens.explain(model, X, method="legrad", target=TARGETS)
    assert (exp.raw - expected.float()).abs().max() < 1e-5


def test_legrad_on_hugging_face_scores_the_class_token():
    model = hf_vit()
    exp = camlens.explain(model, X, method="legrad", target=[0, 2, 1])
    assert exp.raw.shape == (3, 4, 4) and exp.raw.amax() > 0
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("method", ["rollout", "transformer-attribution", "legrad"])
def test_half_precision_vit_and_empty_batch(method):
    model = tiny_vit()
    exact = camlens.explain(model, X, method, target=TARGETS)
    half = camlens.explain(
        tiny_vit().to(torch.bfloat16), X.to(torch.bfloat16), method, target=TARGETS
    )
    assert half.maps.dtype == torch.float32 and (half.maps - exact.maps).abs().max() < 0.1
    with pytest.raises(camlens.CamlensValueError, match="x is an empty batch"):
        camlens.explain(model, X[:0], method)
