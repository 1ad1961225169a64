"""Image files and their pixels: which files count as images, a PIL image as uint8 RGB without
float copies, the whole-image resize to a model's side, and a decoded batch's copy to the model's
device (:func:`to_device`).

The lowest level of :mod:`camlens.images`: :mod:`~camlens.images.decode` (the one decoder) and
:mod:`~camlens.images.load` build on it.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from PIL import Image

#: File suffixes taken as images when a folder or glob is searched for them (explain, train,
#: evaluate); other files there are counted as ignored.
IMAGE_SUFFIXES = frozenset(
    {
        *(".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".bmp", ".dib", ".gif", ".webp"),
        *(".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".ico", ".pcx", ".tga", ".qoi"),
        *(".jp2", ".j2k", ".psd", ".dds", ".avif", ".heic", ".heif"),
    }
)

#: Held while a decoder changes the process-wide warning filters (``warnings.catch_warnings``):
#: one thread at a time.
WARNING_FILTERS = threading.Lock()


def pil_rgb(image: Image.Image) -> np.ndarray:
    """A PIL image as uint8 RGB (H, W, 3) without float copies: 16-bit and 32-bit integer
    images (``I;16*``, ``I``) are shifted down 8 bits in place (``I`` only when it holds values
    over 255), palette images with transparency go through RGBA (no Pillow warning)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        array = np.array(image)  # uint16 (or int32 for "I"): the one copy made
        if image.mode == "I":
            np.clip(array, 0, 65535, out=array)
        if image.mode != "I" or array.max(initial=0) > 255:
            np.right_shift(array, 8, out=array)
        gray = array.astype(np.uint8)
        del array
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return np.array(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def resize_unit(image: np.ndarray, size: int) -> torch.Tensor:
    """A uint8 RGB image (H, W, 3), whole, resized to (3, size, size) floats in [0, 1]: Pillow's
    bilinear filter (antialiased when shrinking), one 8-bit rounding. Pillow releases the GIL, so
    decoding threads resize beside the model without taking its cores' thread pool."""
    if image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    return torch.from_numpy(np.array(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


def pinned(batch: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``batch`` in page-locked (pinned) host memory when it is bound for a CUDA ``device`` from
    the CPU, so that its copy can run asynchronously; otherwise ``batch`` itself (pinning costs a
    copy, which only a CUDA transfer repays)."""
    if torch.device(device).type != "cuda" or batch.device.type != "cpu" or batch.is_pinned():
        return batch
    return batch.pin_memory()


def to_device(batch: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A decoded batch on the model's ``device``: for CUDA, pinned (:func:`pinned`) and copied
    with ``non_blocking=True`` (the copy overlaps the host's work; later kernels on the stream
    wait for it); on the CPU, ``batch`` itself, untouched."""
    device = torch.device(device)
    if device.type == "cpu" and batch.device.type == "cpu":
        return batch
    if device.type == "cuda" and batch.device.type == "cpu":
        return pinned(batch, device).to(device, non_blocking=True)
    return batch.to(device)
