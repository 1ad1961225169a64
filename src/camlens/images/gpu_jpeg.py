"""JPEG files decoded on the GPU, for :func:`camlens.images.decode.decode` (the one decoder).

When the model runs on a CUDA device and torchvision's GPU decoder (nvJPEG,
``torchvision.io.decode_jpeg(device="cuda")``) works there (:func:`available`), a batch's plain
JPEGs are decoded and resized to the model's side on the GPU; every other file goes to the CPU
decoder (:func:`~camlens.images.decode.read_image`), unchanged. A plain JPEG (:func:`plain_jpeg`)
is one the GPU decodes exactly as the CPU decoder would: Pillow reads its header as a ``JPEG``
(not ``MPO``) in ``RGB`` mode (not grayscale, not CMYK), its EXIF orientation is upright (1 or
none: a rotated phone photo is turned upright by the CPU decoder), it is within the pixel limit
and small enough not to be decoded reduced (``draft``). A file the GPU fails to decode goes to
the CPU decoder, which decodes it or fails it with its reason, as for any file.

The pixels agree with the CPU decoder's: libjpeg-turbo's and torchvision's CPU decoders give the
same bytes (``tests/images/test_gpu_jpeg.py``), nvJPEG differs from them by the IDCT's rounding;
the resize (bilinear, antialiased, one 8-bit rounding) is within one level of Pillow's.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from camlens.images.pixels import WARNING_FILTERS, pinned, to_device

_AVAILABLE: dict[str, bool] = {}
#: A 16x16 grey JPEG: what :func:`available` decodes to test a device.
_TEST_SIDE = 16


def available(device: torch.device) -> bool:
    """Whether torchvision decodes JPEGs on ``device`` (a CUDA device; tried once, remembered)."""
    if device.type != "cuda":
        return False
    key = str(device)
    if key not in _AVAILABLE:
        try:
            from PIL import Image

            buffer = io.BytesIO()
            Image.new("RGB", (_TEST_SIDE, _TEST_SIDE), (128, 128, 128)).save(buffer, "JPEG")
            _AVAILABLE[key] = _decode([buffer.getvalue()], device)[0] is not None
        except ImportError:  # torchvision is not installed
            _AVAILABLE[key] = False
    return _AVAILABLE[key]


def plain_jpeg(data: bytes, size: int, max_pixels: int | None, draft_ratio: int) -> bool:
    """Whether ``data`` is a JPEG the GPU decodes as the CPU decoder would (see the module)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as opened:
            width, height = opened.size
            return (
                opened.format == "JPEG"
                and opened.mode == "RGB"
                and opened.getexif().get(0x0112, 1) == 1
                and (max_pixels is None or width * height <= max_pixels)
                and min(width, height) <= draft_ratio * size
            )
    except Exception:  # noqa: BLE001  (the CPU decoder says what is wrong with the file)
        return False


def _decode(datas: Sequence[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """JPEG files' bytes decoded on ``device`` as (3, H, W) uint8, all at once, else one by one
    (None for a file that fails)."""
    import torchvision.io

    def run(batch: list[torch.Tensor]) -> list[torch.Tensor]:
        # torchvision 0.29 warns at every call that TorchCodec supersedes its decoders; the
        # filters are process-wide, so one thread at a time changes them
        with WARNING_FILTERS, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            mode = torchvision.io.ImageReadMode.RGB
            return list(torchvision.io.decode_jpeg(batch, mode=mode, device=device))

    tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    try:
        return list(run(tensors))
    except RuntimeError:
        pass
    out: list[torch.Tensor | None] = []
    for tensor in tensors:
        try:
            out.append(run([tensor])[0])
        except RuntimeError:
            out.append(None)
    return out


def unit_on(image: torch.Tensor, size: int) -> torch.Tensor:
    """A (3, H, W) uint8 image resized whole to (3, size, size) floats in [0, 1] on its device,
    as :func:`~camlens.images.pixels.resize_unit` does on the CPU: bilinear, antialiased when
    shrinking, one 8-bit rounding."""
    x = image[None].float()
    if tuple(image.shape[1:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        x = x.round_().clamp_(0, 255)
    return x[0].div_(255.0)


def decode_jpegs(
    paths: Sequence[Path],
    size: int,
    device: torch.device,
    max_pixels: int | None,
    draft_ratio: int,
) -> dict[Path, tuple[np.ndarray, torch.Tensor]]:
    """The plain JPEGs among ``paths`` decoded on ``device``: each one's image (uint8 RGB
    (H, W, 3) on the CPU, for overlays) and model input (:func:`unit_on`, on ``device``); files
    that are not plain JPEGs or fail on the GPU are left out (for the CPU decoder)."""
    if not available(device):
        return {}
    wanted: dict[Path, bytes] = {}
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        if plain_jpeg(data, size, max_pixels, draft_ratio):
            wanted[path] = data
    decoded = _decode(list(wanted.values()), device) if wanted else []
    return {
        path: (image.permute(1, 2, 0).cpu().numpy(), unit_on(image, size))
        for path, image in zip(wanted, decoded)
        if image is not None
    }


def stack_units(units: Sequence[torch.Tensor], device: torch.device | None) -> torch.Tensor:
    """A batch's model inputs as one (B, 3, S, S) tensor: on ``device`` when some were decoded
    there, else on the CPU, pinned when bound for a GPU (:func:`~camlens.images.pixels.pinned`:
    the decoding thread pins it, the model's thread copies it without blocking)."""
    if device is None or all(unit.device.type == "cpu" for unit in units):
        batch = torch.stack(list(units))
        return batch if device is None else pinned(batch, device)
    return torch.stack([to_device(unit, device) for unit in units])
