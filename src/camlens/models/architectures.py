"""Backbones for CAM-ready classifiers: a convolutional body whose last map feeds GAP + Linear.

:func:`build_body` returns the body of a model named by ``camlens:NAME`` (the small CNNs here),
``torchvision:NAME`` (or a bare torchvision name) or ``timm:NAME``: an ``nn.Sequential`` that maps
an image (B, 3, H, W) to a spatial map (B, C, h, w), with its normalisation (mean, std). The
original classifier head, its pooling and any trailing pooling/dropout are cut off, so the body's
output is exactly what the global average pooling of :class:`camlens.Classifier` reads, and CAM
(Zhou et al. 2016) applies.
"""

from __future__ import annotations

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


#: camlens's own bodies, ``camlens:NAME`` -> factory ``(**kwargs) -> nn.Sequential``.
_ARCHITECTURES: dict[str, Callable[..., nn.Sequential]] = {"smallcnn": smallcnn}


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
