"""Backbones for CAM-ready classifiers: a body whose last map feeds GAP + Linear.

:func:`build_body` returns the body of a model named by ``camlens:NAME`` (the small CNN and
vision transformer here),
``torchvision:NAME`` (or a bare torchvision name) or ``timm:NAME``: an ``nn.Sequential`` that maps
an image (B, 3, H, W) to a spatial map (B, C, h, w), with its normalisation (mean, std). The
original classifier head, its pooling and any trailing pooling/dropout are cut off, so the body's
output is exactly what the global average pooling of :class:`camlens.Classifier` reads, and CAM
(Zhou et al. 2016) applies.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from camlens.errors import CamlensValueError
from camlens.images.load import IMAGENET_MEAN, IMAGENET_STD
from camlens.models.weights import read_state, timm_model, torchvision_model


def _block(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def smallcnn(channels: int = 3, width: int = 16) -> nn.Sequential:
    """The demo CNN: five conv3x3 blocks (conv, batch norm, ReLU), 1/4 resolution.

    Widths w, 2w, 2w, 3w, 4w; the first two blocks have stride 2, so a 64x64 input gives 16x16
    maps (receptive field 31 px). About 29 MFLOPs per 64x64 image at the default ``width=16``.
    """
    return nn.Sequential(
        OrderedDict(
            block1=_block(channels, width, stride=2),
            block2=_block(width, 2 * width, stride=2),
            block3=_block(2 * width, 2 * width),
            block4=_block(2 * width, 3 * width),
            block5=_block(3 * width, 4 * width),
        )
    )


class PatchTokens(nn.Module):
    """Patch embedding with a small convolutional stem (Xiao et al. 2021, arXiv:2106.14881: it
    makes a ViT train faster from scratch): conv3x3 stride 2 to ``dim / 2`` channels and GELU,
    then a ``patch / 2`` convolution with that stride, so each token covers a ``patch`` x
    ``patch`` patch; the tokens (B, h*w, dim) plus a learned position embedding for a ``grid`` x
    ``grid`` layout."""

    def __init__(self, channels: int, dim: int, patch: int, grid: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(channels, dim // 2, 3, 2, 1),
            nn.GELU(),
            nn.Conv2d(dim // 2, dim, patch // 2, patch // 2),
        )
        self.position = nn.Parameter(torch.randn(1, grid * grid, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        if tokens.shape[1] != self.position.shape[1]:
            raise CamlensValueError(
                f"smallvit has position embeddings for {self.position.shape[1]} patches, the "
                f"input gives {tokens.shape[1]}; resize the image to the model's input_size"
            )
        return tokens + self.position


class EncoderBlock(nn.Module):
    """A pre-norm transformer encoder block: ``x + attention(norm1(x))``, then
    ``x + mlp(norm2(x))``; the attention is an ``nn.MultiheadAttention`` (batch first)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        # need_weights=True: the attention written out, not the fused kernel, so that methods
        # differentiating twice (ShapleyCAM's Hessian-vector product) can
        x = x + self.attention(y, y, y, need_weights=True)[0]
        return x + self.mlp(self.norm2(x))


class TokenGrid(nn.Module):
    """Patch tokens (B, h*w, D) back to a square feature map (B, D, h, w), so the classifier's
    global average pooling is the tokens' mean and CAM-style methods read the patch grid."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, count, dim = tokens.shape
        side = math.isqrt(count)
        if side * side != count:
            raise CamlensValueError(f"{count} tokens form no square grid")
        return tokens.transpose(1, 2).reshape(batch, dim, side, side)


def smallvit(
    channels: int = 3,
    dim: int = 48,
    depth: int = 4,
    heads: int = 4,
    patch: int = 8,
    grid: int = 8,
    mlp: int = 2,
) -> nn.Sequential:
    """The demo vision transformer: patch embedding (:class:`PatchTokens`, ``patch`` px, a
    ``grid`` x ``grid`` layout: 64x64 inputs at the defaults), ``depth`` pre-norm
    :class:`EncoderBlock` s (``heads`` heads, MLP ``mlp * dim``), a final LayerNorm and
    :class:`TokenGrid`. No class token: the head's GAP is the tokens' mean.
    """
    blocks = [(f"block{i + 1}", EncoderBlock(dim, heads, mlp * dim)) for i in range(depth)]
    return nn.Sequential(
        OrderedDict(
            [
                ("embed", PatchTokens(channels, dim, patch, grid)),
                *blocks,
                ("norm", nn.LayerNorm(dim, eps=1e-6)),
                ("grid", TokenGrid()),
            ]
        )
    )


#: camlens's own bodies, ``camlens:NAME`` -> factory ``(**kwargs) -> nn.Sequential``.
_ARCHITECTURES: dict[str, Callable[..., nn.Sequential]] = {
    "smallcnn": smallcnn,
    "smallvit": smallvit,
}


def architectures() -> list[str]:
    """Names of camlens's own bodies (``camlens:NAME``)."""
    return list(_ARCHITECTURES)


class FeatureMap(nn.Module):
    """Marks the body's output as one named layer (a copy of its input).

    timm's residual blocks add the shortcut in place, so the last block's output tensor is
    first produced by an inner norm layer and ``layer="auto"`` could settle on the shortcut;
    a fresh tensor made by this last module is unambiguous.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


@dataclass
class Body:
    """A model's convolutional body, how it was named, and the normalisation it expects."""

    module: nn.Sequential
    architecture: dict
    mean: tuple[float, ...]
    std: tuple[float, ...]
    features: int = 0  # channels C of the output map


def parse(backbone: str) -> tuple[str, str]:
    """``(source, name)`` for a backbone spec: camlens:, torchvision:, timm: or a bare name."""
    source, sep, name = backbone.partition(":")
    if not sep:
        source, name = ("camlens" if backbone in _ARCHITECTURES else "torchvision"), backbone
    if source not in ("camlens", "torchvision", "timm") or not name:
        raise CamlensValueError(
            f"backbone must be a torchvision model name, timm:NAME or camlens:NAME, got "
            f"{backbone!r}"
        )
    return source, name


def build_body(
    backbone: str, weights: str | None = None, kwargs: dict | None = None, image_size: int = 224
) -> Body:
    """Build the body of ``backbone`` with ``weights`` ("DEFAULT", a file, or None/"none")."""
    source, name = parse(backbone)
    kwargs = dict(kwargs or {})
    weights = None if weights in (None, "none", "None") else weights
    if source == "camlens":
        if name not in _ARCHITECTURES:
            raise CamlensValueError(
                f"unknown camlens backbone {name!r}; valid: {', '.join(_ARCHITECTURES)}"
            )
        module = _ARCHITECTURES[name](**kwargs)
        if weights not in (None, "DEFAULT"):
            _load_weights(module, weights)
        gray = (0.5,) * kwargs.get("channels", 3)
        body = Body(module, {"source": source, "name": name, "kwargs": kwargs}, gray, gray)
    elif source == "torchvision":
        body = _torchvision_body(name, weights)
    else:
        body = _timm_body(name, weights)
    body.features = _feature_channels(body.module, backbone, len(body.mean), image_size)
    return body


def _load_weights(model: nn.Module, path: str) -> None:
    try:
        model.load_state_dict(read_state(Path(path), "weights"))
    except RuntimeError as error:
        raise CamlensValueError(
            f"weights {path!r} do not fit the backbone: {str(error).splitlines()[0]}"
        ) from error


def _torchvision_body(name: str, weights: str | None) -> Body:
    import torchvision

    model = torchvision_model(name, weights if weights in (None, "DEFAULT") else None)
    if weights not in (None, "DEFAULT"):
        _load_weights(model, weights)
    children: list[tuple[str, nn.Module]] = []
    for child_name, child in model.named_children():
        if child_name in ("AuxLogits", "aux1", "aux2"):
            continue
        if _is_head(child_name, child):
            break
        children.append((child_name, child))
    while children and _is_trailing(children[-1][1]):
        last_name, last = children.pop()
        if isinstance(last, nn.Sequential) and len(last) > 1:
            children.append((last_name, last[:-1]))
    if isinstance(model, torchvision.models.DenseNet):
        children.append(("relu", nn.ReLU()))  # DenseNet's forward applies it after features
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if getattr(model, "transform_input", False):  # GoogLeNet / Inception re-normalise inside
        mean, std = (0.5,) * 3, (0.5,) * 3
    architecture = {"source": "torchvision", "name": name, "kwargs": {}}
    return Body(nn.Sequential(OrderedDict(children)), architecture, mean, std)


def _is_head(name: str, module: nn.Module) -> bool:
    if name in ("fc", "classifier", "head", "heads", "avgpool", "global_pool"):
        return True
    pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear, nn.Dropout)
    return isinstance(module, pools)


def _is_trailing(module: nn.Module) -> bool:
    """A pooling or dropout at the end of the body (VGG's last max-pool)."""
    last = module
    while isinstance(last, nn.Sequential) and len(last):
        last = last[-1]
    return isinstance(last, (nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Dropout2d))


def _timm_body(name: str, weights: str | None) -> Body:
    model = timm_model(
        name, "DEFAULT" if weights == "DEFAULT" else None, num_classes=0, global_pool=""
    )
    if weights not in (None, "DEFAULT"):
        _load_weights(model, weights)
    config = getattr(model, "pretrained_cfg", {}) or {}
    mean = tuple(config.get("mean", IMAGENET_MEAN))
    std = tuple(config.get("std", IMAGENET_STD))
    architecture = {"source": "timm", "name": name, "kwargs": {}}
    body = nn.Sequential(OrderedDict(body=model, features=FeatureMap()))
    return Body(body, architecture, mean, std)


def _feature_channels(body: nn.Module, backbone: str, channels: int, image_size: int) -> int:
    """Channels C of the body's output for an input of ``image_size``; raise unless (B, C, h, w)."""
    training = body.training
    body.eval()
    try:
        with torch.no_grad():
            output = body(torch.zeros(1, channels, image_size, image_size))
    except Exception as error:  # noqa: BLE001  (any failure means: not a conv body)
        output = error
    finally:
        body.train(training)
    if not isinstance(output, torch.Tensor) or output.ndim != 4:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else repr(output)[:80]
        raise CamlensValueError(
            f"backbone {backbone!r} has no convolutional feature map (B, C, h, w) to put a GAP + "
            f"Linear head on (its body gave {got}); use a CNN such as resnet18, efficientnet_b0 "
            "or convnext_tiny"
        )
    return int(output.shape[1])
