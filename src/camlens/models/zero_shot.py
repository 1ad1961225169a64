r"""Zero-shot image classifiers from image-text models (CLIP): the classes are text prompts.

:func:`zero_shot` wraps an open_clip model (``encode_image``/``encode_text``/``logit_scale``) or a
Hugging Face ``CLIPModel`` (``get_image_features``/``get_text_features``) into a
:class:`ZeroShot` module whose logits for an image :math:`x` and prompts :math:`t_k` are

.. math:: z_k = e^{s}\, \frac{f(x)}{\lVert f(x)\rVert} \cdot \frac{g(t_k)}{\lVert g(t_k)\rVert}
   \;(+\, b)

with :math:`s` the model's ``logit_scale`` (and :math:`b` its ``logit_bias`` where it has one,
SigLIP), the same numbers as the model's own ``logits_per_image``. The prompt embeddings
:math:`g(t_k)/\lVert g(t_k)\rVert` are computed once, without gradient, and kept as the buffer
``text_embeddings``; :meth:`ZeroShot.set_prompts` computes new ones. Only the image tower is a
submodule (open_clip's ``visual``; Hugging Face's ``vision_model`` and ``visual_projection``), so
layer names, the ``auto`` layer and the attention blocks are the image tower's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from camlens.errors import CamlensTypeError, CamlensValueError

#: CLIP's (OpenAI's) normalisation, for models whose config does not say theirs
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def check_prompts(prompts: str | Sequence[str]) -> list[str]:
    """``prompts`` as a list of non-empty, distinct strings (one string is one prompt)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or not all(isinstance(p, str) for p in prompts):
        raise CamlensTypeError(f"prompts must be a list of strings, got {prompts!r}")
    cleaned = [p.strip() for p in prompts]
    if not cleaned or not all(cleaned):
        raise CamlensValueError(
            f"prompts must be one or more non-empty texts (the class names), got {list(prompts)!r}"
        )
    repeated = sorted({p for p in cleaned if cleaned.count(p) > 1})
    if repeated:
        raise CamlensValueError(f"prompts must differ; repeated: {', '.join(repeated)}")
    return cleaned


def kind_of(model: Any) -> str:
    """``"open_clip"`` or ``"hf"``: which image-text interface ``model`` has."""
    if all(hasattr(model, key) for key in ("visual", "encode_text", "logit_scale")):
        return "open_clip"
    if all(hasattr(model, key) for key in ("vision_model", "get_text_features", "logit_scale")):
        return "hf"
    raise CamlensTypeError(
        f"zero_shot takes an open_clip model (visual, encode_text, logit_scale) or a Hugging Face "
        f"CLIPModel (vision_model, get_text_features, logit_scale), got {type(model).__name__}"
    )


def _pooled(output: Any) -> torch.Tensor:
    """The embedding a Hugging Face ``get_*_features`` returns (a tensor, or its
    ``pooler_output`` in transformers 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _text_encoder(
    model: Any, kind: str, tokenizer: Any, processor: Any
) -> Callable[[list[str]], torch.Tensor]:
    """prompts -> their embeddings (K, D), not normalised, on the model's device."""
    if kind == "open_clip":
        if tokenizer is None:
            import open_clip

            length = int(getattr(model, "context_length", 77) or 77)
            tokenizer = lambda texts: open_clip.tokenize(texts, context_length=length)  # noqa: E731

        def encode(texts: list[str]) -> torch.Tensor:
            tokens = tokenizer(texts).to(model.logit_scale.device)
            return model.encode_text(tokens)

        return encode
    tokenizer = tokenizer or getattr(processor, "tokenizer", processor)
    if tokenizer is None:
        raise CamlensValueError(
            "a Hugging Face CLIPModel needs its tokenizer: zero_shot(model, prompts, "
            "processor=CLIPProcessor.from_pretrained(...)) or tokenizer=CLIPTokenizer..."
        )

    def encode_hf(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        device = model.logit_scale.device
        inputs = {key: value.to(device) for key, value in tokens.items() if key != "token_type_ids"}
        return _pooled(model.get_text_features(**inputs))

    return encode_hf


def _preprocess_cfg(model: Any, kind: str, processor: Any) -> tuple[int, tuple, tuple]:
    """The input side, mean and std the model's config gives (open_clip's ``preprocess_cfg``,
    a Hugging Face processor's or config's), CLIP's mean and std where none is given."""
    if kind == "open_clip":
        cfg = getattr(model.visual, "preprocess_cfg", None) or {}
        size = cfg.get("size", getattr(model.visual, "image_size", 224))
        mean, std = cfg.get("mean", CLIP_MEAN), cfg.get("std", CLIP_STD)
    else:
        images = getattr(processor, "image_processor", processor)
        crop = getattr(images, "crop_size", None)
        size = crop.get("height") if isinstance(crop, dict) else getattr(crop, "height", None)
        size = size or model.config.vision_config.image_size
        mean = getattr(images, "image_mean", None) or CLIP_MEAN
        std = getattr(images, "image_std", None) or CLIP_STD
    side = size[0] if isinstance(size, (tuple, list)) else size
    return int(side), tuple(float(m) for m in mean), tuple(float(s) for s in std)


class ZeroShot(nn.Module):
    """An image classifier whose classes are text prompts (see the module's docstring):
    ``labels`` (and ``prompts``) are the prompts, ``text_embeddings`` (K, D) their normalised
    embeddings, ``pretrained_cfg`` the model's mean and std, ``input_size`` its (H, W)."""

    visual: nn.Module
    vision_model: nn.Module
    visual_projection: nn.Module
    logit_scale: torch.Tensor
    logit_bias: torch.Tensor | None
    text_embeddings: torch.Tensor

    def __init__(
        self,
        model: Any,
        prompts: Sequence[str],
        *,
        tokenizer: Any = None,
        processor: Any = None,
    ) -> None:
        super().__init__()
        self.kind = kind_of(model)
        if self.kind == "open_clip":
            self.visual = model.visual
        else:
            self.vision_model = model.vision_model
            self.visual_projection = model.visual_projection
        self.register_buffer("logit_scale", model.logit_scale.detach().clone())
        bias = getattr(model, "logit_bias", None)
        self.register_buffer("logit_bias", None if bias is None else bias.detach().clone())
        side, mean, std = _preprocess_cfg(model, self.kind, processor)
        self.input_size = (side, side)
        self.pretrained_cfg = {"mean": mean, "std": std, "input_size": (3, side, side)}
        # the whole model (text tower too) is kept outside the module tree: only the image tower
        # is surveyed, hooked and moved
        self._encoders = (model, _text_encoder(model, self.kind, tokenizer, processor))
        self.register_buffer("text_embeddings", torch.zeros(0))
        self.labels: list[str] = []
        self.set_prompts(prompts)

    @property
    def prompts(self) -> list[str]:
        """The class names: the prompts, in class order."""
        return list(self.labels)

    def set_prompts(self, prompts: str | Sequence[str]) -> list[str]:
        """Embed ``prompts`` (once, without gradient) as the new classes; returns them."""
        texts = check_prompts(prompts)
        model, encode = self._encoders
        model.to(self.logit_scale.device)
        with torch.no_grad():
            embeddings = F.normalize(encode(texts).float(), dim=-1)
        self.text_embeddings = embeddings.to(self.logit_scale.device, self.logit_scale.dtype)
        self.labels = texts
        return self.prompts

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """The image tower's embedding (B, D), not normalised."""
        if self.kind == "open_clip":
            output = self.visual(x)
            return output[0] if isinstance(output, tuple) else output
        pooled = self.vision_model(pixel_values=x).pooler_output
        return self.visual_projection(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, K): the scaled cosine of each image with each prompt."""
        return self.similarity(self.image_features(x))

    def token_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """A ViT tower block's tokens (B, T, C) through the tower's final norm, pooling and
        projection to logits (B, K): LeGrad's per-block scores."""
        if self.kind == "hf":
            pooled = self.vision_model.get_submodule("post_layernorm")(tokens[:, 0])
            return self.similarity(self.visual_projection(pooled))
        pool = getattr(self.visual, "_pool", None)
        if pool is None:
            raise CamlensValueError("token_logits needs a ViT image tower, not a ResNet")
        pooled = pool(tokens)[0]
        proj = self.visual.proj
        return self.similarity(pooled if proj is None else pooled @ proj)

    def similarity(self, features: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, D) -> logits (B, K)."""
        image = F.normalize(features, dim=-1)
        logits = image @ self.text_embeddings.to(image.dtype).t() * self.logit_scale.exp()
        return logits if self.logit_bias is None else logits + self.logit_bias


def zero_shot(
    model: nn.Module,
    prompts: str | Sequence[str],
    *,
    tokenizer: Any = None,
    processor: Any = None,
) -> ZeroShot:
    """An image classifier whose classes are ``prompts``, from an image-text ``model``.

    ``model``: an open_clip model (``tokenizer``: ``open_clip.get_tokenizer(ARCH)``; default
    open_clip's CLIP tokenizer) or a Hugging Face ``CLIPModel`` (``processor`` a
    ``CLIPProcessor`` or ``tokenizer`` a ``CLIPTokenizer``). The model is put in eval mode.
    """
    model.eval()
    return ZeroShot(model, prompts, tokenizer=tokenizer, processor=processor).eval()
