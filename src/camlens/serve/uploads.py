"""Decoding an uploaded image: bounded in bytes and in pixels, before anything is decompressed."""

from __future__ import annotations

import io
import warnings

import numpy as np

from camlens.errors import CamlensValueError

#: Default limits: 20 MB of file, 40 megapixels of image (a 6,300 x 6,300 photo).
MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The uploaded bytes as uint8 RGB (H, W, 3); ``CamlensValueError`` when they are not an image
    or when its header declares more than ``max_pixels`` pixels (a decompression bomb: a small
    file that would inflate to gigabytes). Only the first frame of an animation is read."""
    from PIL import Image, UnidentifiedImageError

    from camlens.io import to_rgb

    if not data:
        raise CamlensValueError("image: expected an image file, got an empty upload (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                width, height = opened.size
                if width * height > max_pixels:
                    raise CamlensValueError(
                        f"image: expected at most {max_pixels:,} pixels, got {width} x {height} "
                        f"= {width * height:,} (refused before decoding)"
                    )
                opened.load()
                return np.array(to_rgb(opened))
    except UnidentifiedImageError as error:
        raise CamlensValueError(
            "image: expected an image file (PNG, JPEG, WebP...), got bytes Pillow cannot identify"
        ) from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise CamlensValueError(f"image: refused as a decompression bomb ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, CamlensValueError):
            raise
        raise CamlensValueError(f"image: corrupt or truncated image file ({error})") from error
