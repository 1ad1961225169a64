"""Reading images into a model-ready batch.

Presets: ``"imagenet"`` resizes the shorter side to 256, centre-crops 224 and normalises with the
ImageNet mean and std (torchvision's recipe); ``"unit"`` keeps [0, 1] floats. ``size`` overrides the
crop (the resize keeps the 256/224 ratio). Grayscale, palette, RGBA and 16-bit images become 8-bit
RGB first. Files are decoded by :func:`camlens.images.decode.read_image` (EXIF orientation, a
format allow-list, a pixel limit), as every camlens reader decodes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from camlens.errors import CamlensTypeError, CamlensValueError, describe
from camlens.images.decode import read_image
from camlens.images.pixels import IMAGE_SUFFIXES, pil_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preset:
    """How images become a batch: crop size, resize/crop ratio, mean and std (None: [0, 1])."""

    size: int | None
    crop_ratio: float = 224 / 256
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


PRESETS = {
    "imagenet": Preset(224, 224 / 256, IMAGENET_MEAN, IMAGENET_STD),
    "unit": Preset(None, 1.0),
}

ImageLike: TypeAlias = str | os.PathLike | Image.Image | np.ndarray


def to_rgb(image: ImageLike) -> np.ndarray:
    """Any image (path, PIL image, array) as an 8-bit RGB array (H, W, 3).

    A path is decoded by :func:`camlens.images.decode.read_image`. 16-bit values are shifted down
    by 8 bits (65535 -> 255), floats in [0, 1] scaled to 255, grayscale is stacked to three
    channels, alpha is dropped.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.exists(path):
            raise CamlensValueError(f"image {path!r} does not exist")
        try:
            return read_image(Path(path))
        except ValueError as error:
            raise CamlensValueError(f"image {path!r} cannot be read: {error}") from error
    if isinstance(image, Image.Image):
        return pil_rgb(image)
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
            raise CamlensValueError(
                f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got "
                f"{image.shape}"
            )
        if array.dtype == np.uint16:
            array = (array >> 8).astype(np.uint8)
        elif array.dtype != np.uint8:
            array = np.clip(array.astype(np.float32, copy=False), 0, 1) * 255.0 + 0.5
            array = array.astype(np.uint8)
        if array.shape[2] == 1:
            array = np.repeat(array, 3, axis=2)
        return np.ascontiguousarray(array[..., :3])
    raise CamlensTypeError(f"expected an image path, PIL image or array, got {describe(image)}")


def _crop_box(height: int, width: int, preset: Preset, size: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) in original pixels of the centre crop the model sees."""
    side = min(height, width) * preset.crop_ratio
    crop_h = min(height, round(side))
    crop_w = min(width, round(side))
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def load_images(
    images: ImageLike | Iterable[ImageLike],
    preset: str = "imagenet",
    size: int | Sequence[int] | None = None,
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Load images into a float32 batch (B, 3, S, S) and the originals the model sees.

    Returns ``(x, originals)``: ``originals[i]`` is the part of image i that the model sees (the
    centre crop for ``"imagenet"``) at its original resolution, as uint8 RGB (h, w, 3), so a map
    resized onto it lines up with the picture.
    """
    if preset not in PRESETS:
        raise CamlensValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    chosen = PRESETS[preset]
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
        images = [images]
    arrays = [to_rgb(image) for image in images]
    if not arrays:
        raise CamlensValueError("load_images got no images")
    if size is None:
        size = chosen.size
    if isinstance(size, int) or size is None:
        out_hw = None if size is None else (size, size)
    else:
        out_hw = (int(size[0]), int(size[1]))
    if out_hw is None:
        shapes = {a.shape[:2] for a in arrays}
        if len(shapes) > 1:
            raise CamlensValueError(
                f"images have different sizes {sorted(shapes)}; pass size= to resize them"
            )
        out_hw = arrays[0].shape[:2]
    batch, originals = [], []
    for array in arrays:
        height, width = array.shape[:2]
        top, left, crop_h, crop_w = _crop_box(height, width, chosen, min(out_hw))
        crop = array[top : top + crop_h, left : left + crop_w]
        originals.append(np.ascontiguousarray(crop))
        tensor = torch.tensor(crop).permute(2, 0, 1)[None].float() / 255.0
        if tuple(tensor.shape[-2:]) != out_hw:
            tensor = F.interpolate(
                tensor, size=out_hw, mode="bilinear", align_corners=False, antialias=True
            ).clamp(0, 1)
        batch.append(tensor[0])
    x = torch.stack(batch)
    if chosen.mean is not None and chosen.std is not None:
        mean = torch.tensor(chosen.mean)[:, None, None]
        std = torch.tensor(chosen.std)[:, None, None]
        x = (x - mean) / std
    return x, originals


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SUFFIXES",
    "PRESETS",
    "ImageLike",
    "Preset",
    "load_images",
    "pil_rgb",
    "to_rgb",
]
