"""Rendering beyond one classified image: a detection's box and label over its own map, a clip as
an animated GIF, a volume as a grid of slices.

Every frame is :func:`camlens.overlay` of one map over one picture, so a clip's or volume's
overlays are exactly the 2-D ones, laid out in time (GIF) or in a grid (PNG).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from camlens.errors import CamlensValueError
from camlens.images.load import ImageLike, to_rgb
from camlens.visualize.render import _font, draw_boxes, overlay

Box = tuple[float, float, float, float]


def rescale_box(box: Box, source: tuple[int, int], target: tuple[int, int]) -> Box:
    """A detector's box (x0, y0, x1, y1) in continuous pixel coordinates of a ``source`` (H, W)
    image, in those of ``target`` (:func:`camlens.visualize.boxes.scale_box` maps inclusive map
    cells)."""
    sy, sx = target[0] / source[0], target[1] / source[1]
    x0, y0, x1, y1 = box
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)


def detection_overlay(
    image: ImageLike,
    heatmap: torch.Tensor | np.ndarray,
    box: Box,
    text: str,
    colormap: str = "jet",
    alpha: float = 0.5,
    color: tuple[int, int, int] = (0, 255, 0),
) -> np.ndarray:
    """One detection: its map over ``image``, its box (image pixels) and ``text`` above the box
    (inside it when the box touches the top), uint8 RGB at the image's own size."""
    from PIL import Image, ImageDraw

    x0, y0, x1, y1 = (round(v) for v in box)
    picture = draw_boxes(overlay(image, heatmap, colormap, alpha), [(x0, y0, x1, y1)], color)
    canvas = Image.fromarray(picture)
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, round(min(canvas.size) * 0.045)))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    height = bottom - top + 4
    y = y0 - height if y0 >= height else y0
    draw.rectangle((x0, y, x0 + right - left + 4, y + height), fill=color)
    draw.text((x0 + 2, y + 2 - top), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _frames(pictures: ImageLike | Sequence[ImageLike] | np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` RGB pictures from a (T, H, W) or (T, H, W, 3) array or a sequence of images."""
    if isinstance(pictures, np.ndarray) and pictures.ndim in (3, 4):
        items: Sequence[ImageLike] = list(pictures)
    elif isinstance(pictures, Sequence) and not isinstance(pictures, (str, bytes)):
        items = pictures
    else:
        raise CamlensValueError(
            f"expected {count} frames or slices as an array (T, H, W[, 3]) or a list of images, "
            f"got {type(pictures).__name__}"
        )
    if len(items) != count:
        raise CamlensValueError(
            f"the maps have {count} frames but {len(items)} pictures were given"
        )
    return [
        to_rgb(_uint8(item)) if isinstance(item, np.ndarray) else to_rgb(item) for item in items
    ]


def _uint8(array: np.ndarray) -> np.ndarray:
    """A float picture in [0, 1] (a volume slice) as uint8; uint8 as it is."""
    if array.dtype == np.uint8:
        return array
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def clip_overlays(
    frames: Sequence[ImageLike] | np.ndarray,
    maps: torch.Tensor | np.ndarray,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> list[np.ndarray]:
    """One overlay per frame: ``maps`` (T, H, W) of one clip over its T frames."""
    values = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    if values.ndim != 3:
        raise CamlensValueError(f"expected maps of one clip, (T, H, W), got {tuple(values.shape)}")
    pictures = _frames(frames, values.shape[0])
    return [overlay(p, m, colormap, alpha) for p, m in zip(pictures, values)]


def save_gif(overlays: Sequence[np.ndarray], path: str | os.PathLike, fps: float = 8.0) -> None:
    """Write overlays as an animated GIF, looping, ``fps`` frames per second."""
    from PIL import Image

    if not overlays:
        raise CamlensValueError("save_gif needs at least one frame, got none")
    images = [Image.fromarray(frame) for frame in overlays]
    images[0].save(
        os.fspath(path),
        save_all=True,
        append_images=images[1:],
        duration=round(1000 / fps),
        loop=0,
    )


def slice_grid(
    slices: Sequence[ImageLike] | np.ndarray,
    maps: torch.Tensor | np.ndarray,
    columns: int | None = None,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> np.ndarray:
    """A volume's slices as one uint8 RGB grid: slice t's overlay at row t // columns, column
    t % columns (``columns`` = ceil(sqrt(T)) by default); empty cells are black."""
    tiles = clip_overlays(slices, maps, colormap, alpha)
    count = len(tiles)
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    height, width = tiles[0].shape[:2]
    grid = np.zeros((rows * height, columns * width, 3), dtype=np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = tile
    return grid
