r"""Transformer-native methods: maps read from a vision transformer's attention, no reshape
transform needed.

Each pass captures every attention block's post-softmax attention
:math:`A^l \in \mathbb R^{B \times H \times T \times T}` (and, for the gradient methods,
:math:`\nabla A^l = \partial y^c / \partial A^l`) with :mod:`camlens.backends.attention`, also where
the model uses fused attention; the map is the class token's row over the patch tokens (the
prefix tokens dropped), on the patch grid, then upsampled like every other map. A model without
a class token (camlens:smallvit, whose head averages the tokens) reads the mean of all rows, the
relevance of the tokens' mean. ``layer="auto"`` takes every attention block; a name or a list of
names takes those blocks. PyTorch models with timm, Hugging Face or ``nn.MultiheadAttention``
(torchvision, camlens:smallvit) attention.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from camlens.backends.attention import (
    Attended,
    Block,
    attend,
    attention_blocks,
    no_attention,
    projection,
)
from camlens.errors import CamlensValueError, check_choice
from camlens.methods._registry import register
from camlens.methods.base import Explainer, Step
from camlens.targets import Target

HEAD_FUSIONS = ("mean", "max", "min")


class AttentionMethod(Explainer):
    """A map from the attention of every block: ``raw = relevance(attended)`` (B, h, w)."""

    needs_gradients: ClassVar[bool] = False
    several_inputs = False

    def __init__(self, model: Any, layer: Any = "auto", **options: Any) -> None:
        super().__init__(model, layer, **options)
        if self.adapter.framework != "torch":
            raise CamlensValueError(
                f"method {self.name!r} is implemented for PyTorch models only (it reads the "
                "attention of timm, Hugging Face or torchvision transformers); use 'gradcam' for "
                f"a {self.adapter.framework} model"
            )
        self.blocks = _chosen(self.name, self.adapter.model, layer)

    @classmethod
    def applies_to(cls, model: Any) -> bool:
        """Whether ``model`` (or the PyTorch model an adapter wraps) has attention blocks."""
        if getattr(model, "framework", None) == "torch":
            model = model.model
        return bool(attention_blocks(model))

    def relevance(self, attended: Attended) -> torch.Tensor:
        """(B, T, T) relevance of every token for every token; the class token's row is used
        (without a class token: the rows' mean)."""
        raise NotImplementedError

    def _step(self, x: Any, target: Target) -> Step:
        attended = attend(self.adapter, x, target, self.blocks, gradients=self.needs_gradients)
        relevance = self.relevance(attended)
        batch = relevance.shape[0]
        pooled = relevance[:, 0] if attended.prefix else relevance.mean(dim=1)
        raw = pooled[:, attended.prefix :].reshape(batch, *attended.grid)
        layer = "+".join(block.name for block in self.blocks)
        return Step(raw, attended.capture, layer)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer={self.layer!r})"


def _chosen(method: str, model: Any, layer: Any) -> list[Block]:
    """The attention blocks ``layer`` names ("auto": all of them)."""
    blocks = attention_blocks(model)
    if not blocks:
        raise no_attention(method, model)
    if isinstance(layer, str) and layer == "auto":
        return blocks
    names = [layer] if isinstance(layer, str) else list(layer)
    by_name = {block.name: block for block in blocks}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise CamlensValueError(
            f"method {method!r} reads attention blocks; {', '.join(map(repr, unknown))} is not "
            f"one of them (layer='auto' takes all; they are: {', '.join(by_name)})"
        )
    return [block for block in blocks if block.name in names]


def fuse_heads(attention: torch.Tensor, fusion: str) -> torch.Tensor:
    """(B, H, T, T) -> (B, T, T): the heads' mean, max or min."""
    if fusion == "mean":
        return attention.mean(dim=1)
    return attention.amax(dim=1) if fusion == "max" else attention.amin(dim=1)


def discard(fused: torch.Tensor, ratio: float) -> torch.Tensor:
    """``fused`` (B, T, T) with the lowest ``ratio`` of each image's entries set to 0, the class
    token's attention to itself kept (jacobgil/vit-explain's ``discard_ratio``)."""
    flat = fused.flatten(1).clone()
    count = int(flat.shape[1] * ratio)
    if count:
        lowest = flat.topk(count, dim=1, largest=False).indices
        keep = lowest == 0
        flat.scatter_(1, lowest, torch.where(keep, flat.gather(1, lowest), 0.0))
    return flat.reshape(fused.shape)


@register("rollout", "attention-rollout")
class Rollout(AttentionMethod):
    r"""Attention rollout (Abnar & Zuidema 2020, arXiv:2005.00928): the attention of every block
    with the residual added, multiplied through the blocks. No gradient, no target dependence.

    .. math:: \bar A^l = \operatorname{fuse}_h A^l_h, \qquad
       \hat A^l = \frac{\tfrac12(\bar A^l + I)}{\text{row sums}}, \qquad
       R = \hat A^L \hat A^{L-1} \cdots \hat A^1, \qquad M = R_{\text{cls},\,\text{patches}}

    ``head_fusion`` "mean" (default, the paper's), "max" or "min"; ``discard_ratio`` (default 0)
    zeroes the lowest fraction of each fused matrix's entries before the residual is added (the
    class token's self-attention kept), as jacobgil/vit-explain. The rows are normalised after
    adding the identity (the paper's :math:`0.5 W + 0.5 I`, renormalised where max/min fusion or
    discarding leaves rows that do not sum to 1).
    """

    paper = "Abnar & Zuidema 2020, Quantifying Attention Flow in Transformers (arXiv:2005.00928)"

    def __init__(
        self,
        model: Any,
        layer: Any = "auto",
        *,
        head_fusion: str = "mean",
        discard_ratio: float = 0.0,
        **options: Any,
    ) -> None:
        check_choice(head_fusion, HEAD_FUSIONS, "head_fusion")
        if (
            isinstance(discard_ratio, bool)
            or not isinstance(discard_ratio, (int, float))
            or not (0 <= discard_ratio < 1)
        ):
            raise CamlensValueError(f"discard_ratio must be in [0, 1), got {discard_ratio!r}")
        super().__init__(model, layer, **options)
        self.head_fusion = head_fusion
        self.discard_ratio = float(discard_ratio)

    def relevance(self, attended: Attended) -> torch.Tensor:
        result: torch.Tensor | None = None
        for attention in attended.attentions:
            fused = discard(fuse_heads(attention, self.head_fusion), self.discard_ratio)
            eye = torch.eye(fused.shape[-1], device=fused.device, dtype=fused.dtype)
            step = 0.5 * (fused + eye)
            step = step / step.sum(dim=-1, keepdim=True)
            result = step if result is None else step @ result
        assert result is not None
        return result


@register("transformer-attribution", "chefer", "generic-attention")
class TransformerAttribution(AttentionMethod):
    r"""Generic attention-model explainability (Chefer, Gur & Wolf 2021, arXiv:2103.15679):
    relevance propagated through the blocks with gradient-weighted attention.

    .. math:: R^0 = I, \qquad \bar A^l = \mathbb E_h\big[(\nabla A^l \odot A^l)^+\big], \qquad
       R^l = R^{l-1} + \bar A^l R^{l-1}, \qquad M = R^L_{\text{cls},\,\text{patches}}

    :math:`\nabla A^l = \partial y^c / \partial A^l`, the gradient of the target's logit.
    """

    paper = "Chefer, Gur & Wolf 2021, Generic Attention-model Explainability (arXiv:2103.15679)"
    needs_gradients = True

    def relevance(self, attended: Attended) -> torch.Tensor:
        assert attended.gradients is not None
        first = attended.attentions[0]
        tokens = first.shape[-1]
        eye = torch.eye(tokens, device=first.device, dtype=first.dtype)
        result = eye.expand(first.shape[0], tokens, tokens)
        for attention, gradient in zip(attended.attentions, attended.gradients):
            weighted = (gradient * attention).clamp_min(0).mean(dim=1)
            result = result + weighted @ result
        return result


@register("legrad")
class LeGrad(AttentionMethod):
    r"""LeGrad (Bousselham et al. 2024, arXiv:2404.03214), as TorchCAM 0.5's ``LeGrad``: every
    block's own class score differentiated with respect to its attention.

    .. math:: s^l = \operatorname{head}\big(\operatorname{norm}(X^l)\big)_c, \qquad
       M = \frac1L \sum_{l=1}^{L} \mathbb E_{h,\,q}\Big[\Big(\frac{\partial s^l}
       {\partial A^l_{h,q,k}}\Big)^+\Big]_{k \in \text{patches}}

    :math:`X^l` are block :math:`l`'s output tokens, scored by the model's own final norm and
    head (timm: its pooling, class token or mean; Hugging Face ViT: the class token; torchvision:
    the tokens' mean, as TorchCAM; a camlens :class:`~camlens.Classifier` such as ``demo-vit``:
    its body's layers after the last block, then its GAP + Linear head). ``layer="auto"``
    averages over every block (TorchCAM's example takes the last four: pass their names).
    """

    paper = "Bousselham et al. 2024, LeGrad (arXiv:2404.03214)"
    needs_gradients = True

    def __init__(self, model: Any, layer: Any = "auto", **options: Any) -> None:
        super().__init__(model, layer, **options)
        self.project = projection(self.adapter.model)
        if self.project is None:
            raise CamlensValueError(
                f"method 'legrad' scores every block's tokens with the model's final norm and "
                f"head, which camlens finds on timm, Hugging Face and torchvision ViT classifiers, "
                f"not on {type(self.adapter.model).__name__}; use 'transformer-attribution'"
            )

    def _step(self, x: Any, target: Target) -> Step:
        attended = attend(
            self.adapter, x, target, self.blocks, gradients=True, project=self.project
        )
        assert attended.gradients is not None
        maps = [g.clamp_min(0).mean(dim=(1, 2))[:, attended.prefix :] for g in attended.gradients]
        raw = torch.stack(maps).mean(dim=0).reshape(maps[0].shape[0], *attended.grid)
        return Step(raw, attended.capture, "+".join(block.name for block in self.blocks))
