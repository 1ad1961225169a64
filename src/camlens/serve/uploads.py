"""Decoding an uploaded image: bounded in bytes, pixels, formats, threads and time.

Uploads are decoded by :func:`camlens.images.decode.read_image`, the decode function of every
reader: a format outside its allow-list (EPS and PDF, which Pillow would hand to Ghostscript,
among them) is refused with 415, an image over the pixel limit with 400, both from the header
before anything is decompressed. Decoding runs in a
:class:`Decoders` pool of a few threads with a time limit per request; only the image resized to
the model's input is kept while the request waits for the model.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from camlens.errors import CamlensValueError
from camlens.images.decode import read_image
from camlens.runs.session import resize_unit

#: Default limits: 20 MB of file, 40 megapixels of image (a 6,300 x 6,300 photo).
MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
#: Decoder threads and the seconds a request may wait for its image to be decoded.
DECODERS = 2
DECODE_TIMEOUT = 20.0


class Unsupported(CamlensValueError):
    """The upload is not an image of a served format (HTTP 415)."""


class TimedOut(CamlensValueError):
    """Decoding the upload took over the time limit (HTTP 503)."""


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, size: int | None = None) -> np.ndarray:
    """The uploaded bytes as uint8 RGB (H, W, 3), decoded by
    :func:`camlens.images.decode.read_image` (its format allow-list, EXIF orientation and pixel
    limit checked from the header; ``size`` lets a large JPEG decode reduced): :class:`Unsupported`
    for a format it does not read (EPS, PDF...), ``CamlensValueError`` saying why for
    anything else."""
    if not data:
        raise CamlensValueError("image: expected an image file, got an empty upload (0 bytes)")
    try:
        return read_image(data, size, max_pixels)
    except ValueError as error:
        refused = str(error).startswith(("not an image", "not a supported image format"))
        raise (Unsupported if refused else CamlensValueError)(f"image: {error}") from error


def decode_for_model(data: bytes, size: int, max_pixels: int = MAX_PIXELS) -> Any:
    """The upload decoded and resized at once to the model's input (a [0, 1] (3, size, size)
    tensor, as ``camlens explain`` resizes): the full-size pixels are freed, and given back to
    the system, before returning."""
    try:
        return resize_unit(decode_image(data, max_pixels, size), size)
    finally:
        _give_back()


def _give_back() -> None:
    """Return freed heap memory to the system (glibc keeps what a thread's arena freed)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return None


class Decoders:
    """A pool of ``workers`` decoding threads; :meth:`decode` waits at most ``timeout`` seconds
    for its turn and its decoding together (:class:`TimedOut` after that)."""

    def __init__(self, workers: int = DECODERS, timeout: float = DECODE_TIMEOUT) -> None:
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="camlens-decode")

    async def decode(self, data: bytes, size: int, max_pixels: int) -> Any:
        future = self._pool.submit(decode_for_model, data, size, max_pixels)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
        except asyncio.TimeoutError:
            future.cancel()  # not started yet: it never will be
            raise TimedOut(
                f"image: not decoded within {self.timeout:g} s (the server is busy decoding "
                "other uploads); try again"
            ) from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
