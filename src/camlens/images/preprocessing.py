"""What the command line feeds a model: [0, 1] RGB images turned into the model's own input.

A batch leaves the loader as float32 (B, 3, H, W) in [0, 1]. ``Preprocess`` turns it into what the
model was trained on:

- ``imagenet``: :math:`(x - \\mu) / \\sigma` with ImageNet's RGB mean and std (torchvision);
- ``unit``: :math:`x` itself, in [0, 1] (a camlens checkpoint, a Keras model trained on x / 255);
- ``raw``: :math:`255 x` (Keras models that rescale inside, e.g. a ``Rescaling`` layer);
- ``tf``: :math:`2x - 1` (Keras MobileNet, Xception, Inception);
- ``caffe``: :math:`255 x` in BGR order minus the BGR means (103.939, 116.779, 123.68)
  (Keras ResNet50, VGG);
- ``auto``: the model's own: a camlens checkpoint's ``unit``, a timm model's mean and std from its
  ``pretrained_cfg``, a ``keras:NAME`` application's ``preprocess_input``, ``unit`` for a
  ``.keras`` file (its training scale is not stored in it) and ``imagenet`` for the rest.

A model with one input channel gets the mean of R, G and B.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from camlens.errors import check_choice
from camlens.images.load import IMAGENET_MEAN, IMAGENET_STD
from camlens.models.checkpoint import Classifier
from camlens.models.zero_shot import ZeroShot

MODES = ("auto", "imagenet", "unit", "raw", "tf", "caffe")
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Preprocess:
    """``name`` says what was chosen; ``apply`` maps a [0, 1] (B, 3, H, W) batch to the model's
    input, still (B, C, H, W); ``note`` is set when the choice is a guess the user should check."""

    name: str
    apply: Callable[[torch.Tensor], torch.Tensor]
    channels: int = 3
    note: str | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels == 1:
            x = x.mean(dim=1, keepdim=True)
        return self.apply(x)


def _normalise(mean: Any, std: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    def apply(x: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(mean, dtype=x.dtype, device=x.device)[: x.shape[1], None, None]
        s = torch.tensor(std, dtype=x.dtype, device=x.device)[: x.shape[1], None, None]
        return (x - m) / s

    return apply


def _caffe(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x * 255.0 - sum(CAFFE_BGR_MEAN) / 3
    bgr = x.flip(1) * 255.0
    return bgr - torch.tensor(CAFFE_BGR_MEAN, dtype=x.dtype, device=x.device)[:, None, None]


FIXED: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "imagenet": _normalise(IMAGENET_MEAN, IMAGENET_STD),
    "unit": lambda x: x,
    "raw": lambda x: x * 255.0,
    "tf": lambda x: x * 2.0 - 1.0,
    "caffe": _caffe,
}


def _keras_application(spec: str) -> Preprocess | None:
    """The ``preprocess_input`` of the module that defines keras.applications.NAME."""
    import keras

    builder = getattr(keras.applications, spec.partition(":")[2], None)
    module = sys.modules.get(getattr(builder, "__module__", ""))
    function = getattr(module, "preprocess_input", None)
    if function is None:
        return None

    def apply(x: torch.Tensor) -> torch.Tensor:
        channels_last = (x * 255.0).permute(0, 2, 3, 1).numpy().astype(np.float32)
        # np.array copies: caffe's BGR flip leaves negative strides torch cannot take
        out = np.array(function(channels_last.copy()), dtype=np.float32)
        return torch.from_numpy(out).permute(0, 3, 1, 2)

    return Preprocess(f"{spec}'s preprocess_input", apply)


def input_channels(network: Any) -> int:
    """The number of input channels of a Keras model with a static input shape, else 3."""
    shape = getattr(network, "input_shape", None)
    if isinstance(shape, tuple) and len(shape) == 4 and shape[-1] in (1, 3):
        return int(shape[-1])
    return 3


def input_size(network: Any, default: int = 224) -> int:
    """The model's own input side: a camlens checkpoint's or zero-shot model's, a Keras model's
    static square input shape's, an ONNX model's fixed (H, W) (its ``static_size``), else
    ``default``."""
    if isinstance(network, (Classifier, ZeroShot)):
        return int(network.input_size[0])
    fixed = getattr(network, "static_size", None)
    if isinstance(fixed, tuple) and len(fixed) == 2 and fixed[0] == fixed[1]:
        return int(fixed[0])
    shape = getattr(network, "input_shape", None)
    if isinstance(shape, tuple) and len(shape) == 4 and shape[1] and shape[1] == shape[2]:
        return int(shape[1])
    return default


def resolve(mode: str, spec: str, network: Any) -> Preprocess:
    """The preprocessing ``mode`` (one of :data:`MODES`) means for the model ``network`` loaded
    from ``spec``."""
    check_choice(mode, MODES, "--preprocess")
    channels = input_channels(network)
    if mode != "auto":
        return Preprocess(mode, FIXED[mode], channels)
    if isinstance(network, Classifier):
        return Preprocess("unit (the checkpoint normalises itself)", FIXED["unit"], channels)
    config = getattr(network, "pretrained_cfg", None)
    if isinstance(config, dict) and config.get("mean") and config.get("std"):
        mean, std = tuple(config["mean"]), tuple(config["std"])
        return Preprocess(f"the model's mean {mean} and std {std}", _normalise(mean, std))
    if spec.startswith("keras:"):
        found = _keras_application(spec)
        if found is not None:
            return Preprocess(found.name, found.apply, channels)
    if spec.lower().endswith((".keras", ".h5")):
        note = (
            "feeding the Keras model images scaled to [0, 1] (a .keras file does not say its "
            "scale); pass --preprocess raw|tf|caffe|imagenet if it was trained on another"
        )
        return Preprocess("unit", FIXED["unit"], channels, note)
    return Preprocess("imagenet", FIXED["imagenet"], channels)
