r"""The attention probabilities of a vision transformer, captured in one forward pass.

:func:`attention_blocks` finds the self-attention modules of a PyTorch model: timm's
``Attention`` (ViT, DeiT), Hugging Face's ``*Attention`` modules that return their weights (ViT)
and ``nn.MultiheadAttention`` (torchvision's ``VisionTransformer``). Within :func:`capturing`,
every block's post-softmax attention :math:`A \in \mathbb R^{B \times H \times T \times T}` is
recorded as the very tensor the block multiplies with its values, so it stays in the autograd
graph (``torch.autograd.grad(score, A)`` works), also where the model uses fused attention:

- timm: ``fused_attn`` is switched off for the call and ``attn_drop``'s output is recorded;
- Hugging Face: the config's ``_attn_implementation`` is set to ``"eager"`` for the call and the
  weights each attention module returns are recorded;
- ``nn.MultiheadAttention``: the call runs :func:`_multihead` (the same projections, the
  attention written out) instead of the fused kernel.

Every setting is restored afterwards, also on error. :func:`prefix_tokens` counts the class,
distillation and register tokens before the patches; :func:`patch_grid` the (h, w) patch grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn as nn

from camlens import targets as targets_
from camlens.backends.base import Capture
from camlens.backends.torch_forward import detached
from camlens.backends.torch_hooks import hooked
from camlens.errors import CamlensValueError

#: parameter names of the tokens placed before the patches (timm, torchvision, Hugging Face)
PREFIX_PARAMETERS = ("cls_token", "class_token", "dist_token", "reg_token", "register_tokens")
#: CLIP's class token (open_clip, Hugging Face): one vector (width,)
CLASS_EMBEDDING = "class_embedding"


@dataclass(frozen=True)
class Block:
    """One self-attention module: its dotted ``name``, the ``module`` and its ``kind`` ("timm",
    "hf" or "mha")."""

    name: str
    module: nn.Module
    kind: str


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.MultiheadAttention):
        return "mha"
    if all(hasattr(module, key) for key in ("fused_attn", "attn_drop", "num_heads")):
        return "timm"
    config = getattr(module, "config", None)
    if type(module).__name__.endswith("Attention") and hasattr(config, "_attn_implementation"):
        return "hf"
    return None


def attention_blocks(model: Any) -> list[Block]:
    """The self-attention modules of ``model`` in definition order (none for other models)."""
    if not isinstance(model, nn.Module):
        return []
    found = []
    for name, module in model.named_modules():
        kind = _kind(module)
        if kind is not None:
            found.append(Block(name, module, kind))
    return found


def no_attention(method: str, model: Any) -> CamlensValueError:
    """The error for an attention method on a model without attention blocks."""
    return CamlensValueError(
        f"method {method!r} needs a vision transformer's attention layers; "
        f"{type(model).__name__} has none (timm, Hugging Face or torchvision attention); use "
        "'gradcam', 'scorecam' or another method for CNNs"
    )


@dataclass
class Attended:
    """One pass with the attention captured: per block the attention (B, H, T, T) and, when
    asked for, d score / d attention, float32 and detached; the pass's logits, target, scores and
    probabilities; the number of prefix tokens and the patch grid (h, w)."""

    attentions: list[torch.Tensor]
    gradients: list[torch.Tensor] | None
    capture: Capture
    prefix: int
    grid: tuple[int, int]


#: tokens (B, T, D) -> class scores (B, K): a block's tokens through the model's norm and head
Projection = Callable[[torch.Tensor], torch.Tensor]


def attend(
    adapter: Any,
    x: Any,
    target: targets_.Target,
    blocks: list[Block],
    *,
    gradients: bool,
    project: Projection | None = None,
) -> Attended:
    """Run ``adapter``'s model on ``x`` with ``blocks``' attention captured (see
    :class:`Attended`); with ``gradients``, d score / d A for the target's score, or with
    ``project``, d s^l / d A^l for each block's own score s^l = project(block l's tokens)."""
    x = adapter.prepare_inputs(x)
    if isinstance(x, torch.Tensor):
        x = x.requires_grad_(gradients)  # the graph reaches A even where the weights are frozen
    size = adapter.input_size(x)
    grad_mode = torch.enable_grad() if gradients else torch.no_grad()
    tokens: list[torch.Tensor] = []
    parents = [_parent(adapter.model, block) for block in blocks] if project else []
    watch = [(parent, _recorder(tokens)) for parent in parents]
    with adapter._explaining(), grad_mode, capturing(blocks) as seen, hooked(watch):
        logits, _ = adapter._forward(x, target=target)
        resolved = targets_.resolve(target, logits)
        score = targets_.scores(logits, resolved)
        if len(seen) != len(blocks) or len(tokens) != len(parents):
            raise CamlensValueError(
                f"{len(blocks)} attention blocks were found but {len(seen)} attention maps were "
                "seen in the forward pass; pass layer= the blocks the model runs once each"
            )
        if project is not None:
            layered = [targets_.scores(project(t), resolved).sum() for t in tokens]
            grads = [torch.autograd.grad(s, a, retain_graph=True)[0] for s, a in zip(layered, seen)]
        elif gradients:
            grads = list(torch.autograd.grad(score.sum(), seen))
        else:
            grads = None
    capture = Capture(
        activations=[],
        gradients=None,
        logits=detached(logits),
        target=resolved,
        scores=score.detach().float().cpu(),
        probs=targets_.probabilities(logits, resolved),
    )
    prefix = prefix_tokens(adapter.model)
    return Attended(
        attentions=[a.detach().float() for a in seen],
        gradients=None if grads is None else [g.detach().float() for g in grads],
        capture=capture,
        prefix=prefix,
        grid=patch_grid(seen[0].shape[-1], prefix, size),
    )


def _parent(model: nn.Module, block: Block) -> nn.Module:
    """The transformer block holding attention module ``block`` (its output: the tokens)."""
    return model.get_submodule(block.name.rpartition(".")[0])


def _recorder(tokens: list[torch.Tensor]) -> Callable[..., None]:
    def record(_: nn.Module, __: Any, output: Any) -> None:
        tokens.append(output[0] if isinstance(output, (tuple, list)) else output)

    return record


def projection(model: Any) -> Projection | None:
    """How a block's tokens become class scores, LeGrad's :math:`s^l`: timm's ``forward_head``
    after its final ``norm`` (the model's own pooling); torchvision's ``heads`` after
    ``encoder.ln`` of the tokens' mean (as TorchCAM's ``LeGrad``); Hugging Face's ``classifier``
    on the class token after the final ``layernorm``; a camlens ``Classifier``'s body after its
    last attention block, then its GAP + Linear head; a zero-shot CLIP's ``token_logits``. None
    for other models."""
    if callable(getattr(model, "token_logits", None)):
        return cast(Projection, model.token_logits)
    if hasattr(model, "forward_head") and isinstance(getattr(model, "norm", None), nn.Module):
        return lambda tokens: model.forward_head(model.norm(tokens))
    norm = getattr(getattr(model, "encoder", None), "ln", None)
    heads = getattr(model, "heads", None)
    if isinstance(norm, nn.Module) and isinstance(heads, nn.Module):
        return lambda tokens: heads(norm(tokens.mean(dim=1)))
    base = getattr(model, str(getattr(model, "base_model_prefix", "")), None)
    final = getattr(base, "layernorm", None)
    classifier = getattr(model, "classifier", None)
    if isinstance(final, nn.Module) and isinstance(classifier, nn.Module):
        return lambda tokens: classifier(final(tokens)[:, 0])
    return _camlens_head(model)


def _camlens_head(model: nn.Module) -> Projection | None:
    """camlens ``Classifier`` (``backbone`` then ``pool``, ``flatten``, ``fc``): the backbone's
    children after the one holding the last attention block (final norm, token grid), then the
    head; None where the attention is not in a direct child of the backbone."""
    backbone = getattr(model, "backbone", None)
    head = [getattr(model, name, None) for name in ("pool", "flatten", "fc")]
    blocks = attention_blocks(model)
    if not isinstance(backbone, nn.Sequential) or not blocks:
        return None
    modules = [part for part in head if isinstance(part, nn.Module)]
    if len(modules) != len(head):
        return None
    parts = blocks[-1].name.split(".")
    children = [name for name, _ in backbone.named_children()]
    if parts[0] != "backbone" or len(parts) < 3 or parts[1] not in children:
        return None
    tail = backbone[children.index(parts[1]) + 1 :]
    return lambda tokens: nn.Sequential(tail, *modules)(tokens)


@contextmanager
def capturing(blocks: list[Block]) -> Iterator[list[torch.Tensor]]:
    """Within the block, the list it yields receives each block's attention (B, H, T, T) in call
    order, in the autograd graph; every setting changed for it is restored on exit."""
    seen: list[torch.Tensor] = []
    with ExitStack() as stack:
        for block in blocks:
            stack.enter_context(_WATCHERS[block.kind](block.module, seen))
        yield seen


@contextmanager
def _switched(
    owner: Any, attribute: str, value: Any, watched: nn.Module, hook: Callable[..., Any]
) -> Iterator[None]:
    """``owner.attribute = value`` and a forward hook on ``watched`` for the block, both undone
    on exit (also on error)."""
    before = getattr(owner, attribute)
    handle = watched.register_forward_hook(hook)
    setattr(owner, attribute, value)
    try:
        yield
    finally:
        setattr(owner, attribute, before)
        handle.remove()


def _timm(module: nn.Module, seen: list[torch.Tensor]) -> AbstractContextManager[None]:
    """timm: fused attention off, ``attn_drop``'s output (the attention it passes on) kept."""

    def hook(_: nn.Module, __: Any, output: torch.Tensor) -> torch.Tensor:
        seen.append(output)
        return output

    return _switched(module, "fused_attn", False, cast(nn.Module, module.attn_drop), hook)


def _hf(module: nn.Module, seen: list[torch.Tensor]) -> AbstractContextManager[None]:
    """Hugging Face: eager attention, the weights the module returns kept."""

    def hook(_: nn.Module, __: Any, output: Any) -> None:
        if isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], torch.Tensor):
            seen.append(output[1])

    return _switched(module.config, "_attn_implementation", "eager", module, hook)


@contextmanager
def _mha(module: nn.Module, seen: list[torch.Tensor]) -> Iterator[None]:
    had = "forward" in vars(module)
    previous: Any = vars(module).get("forward")

    def forward(query: torch.Tensor, key: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        options = dict(zip(MHA_OPTIONS, args)) | kwargs
        output, attention = _multihead(module, query, key, value, options)
        seen.append(attention)
        if not options.get("need_weights", True):
            return output, None
        return output, attention.mean(dim=1) if options.get(
            "average_attn_weights", True
        ) else attention

    module.forward = forward
    try:
        yield
    finally:
        if had:
            module.forward = previous
        else:
            del module.forward


#: ``nn.MultiheadAttention.forward``'s arguments after query, key and value
MHA_OPTIONS = ("key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")

_WATCHERS = {"timm": _timm, "hf": _hf, "mha": _mha}


def _multihead(
    module: Any, query: torch.Tensor, key: Any, value: Any, options: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.MultiheadAttention`` self-attention without masks, written out: the output and the
    attention (B, H, T, T)."""
    if (
        key is not query
        or value is not query
        or options.get("key_padding_mask") is not None
        or options.get("attn_mask") is not None
        or options.get("is_causal")
        or not module._qkv_same_embed_dim
        or module.bias_k is not None
        or module.add_zero_attn
    ):
        raise CamlensValueError(
            "attention methods read nn.MultiheadAttention used as plain self-attention "
            "(query, key and value the same tensor, no masks, no bias_k or zero attention)"
        )
    x = query if module.batch_first else query.transpose(0, 1)
    batch, tokens, width = x.shape
    heads = module.num_heads
    qkv = nn.functional.linear(x, module.in_proj_weight, module.in_proj_bias)
    q, k, v = qkv.reshape(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    attention = (q @ k.transpose(-2, -1) / math.sqrt(width // heads)).softmax(dim=-1)
    attention = nn.functional.dropout(attention, module.dropout, module.training)
    mixed = (attention @ v).transpose(1, 2).reshape(batch, tokens, width)
    output = module.out_proj(mixed)
    return (output if module.batch_first else output.transpose(0, 1)), attention


def prefix_tokens(model: nn.Module) -> int:
    """The number of tokens before the patches: timm's ``num_prefix_tokens``, else the tokens
    of the model's class, distillation and register token parameters (CLIP's ``class_embedding``
    one)."""
    count = getattr(model, "num_prefix_tokens", None)
    if isinstance(count, int):
        return count
    total = 0
    for name, parameter in model.named_parameters():
        last = name.rsplit(".", 1)[-1]
        if last in PREFIX_PARAMETERS and parameter.ndim == 3:
            total += parameter.shape[1]
        elif last == CLASS_EMBEDDING and parameter.ndim == 1:
            total += 1
    return total


def patch_grid(tokens: int, prefix: int, size: tuple[int, ...]) -> tuple[int, int]:
    """The (h, w) grid of ``tokens - prefix`` patches with the aspect ratio of the input
    ``size`` (H, W)."""
    patches = tokens - prefix
    height, width = size[-2], size[-1]
    rows = max(1, round(math.sqrt(patches * height / width)))
    if patches < 1 or patches % rows:
        raise CamlensValueError(
            f"the attention has {tokens} tokens; {prefix} before the patches leave {patches}, "
            f"which form no grid for a {height}x{width} input"
        )
    return rows, patches // rows
