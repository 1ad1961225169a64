"""Colouring maps, blending them over images, labels, contours, boxes and panel figures.

All math is torch and batched (a (B, H, W) stack of maps is coloured in one indexing); numpy
appears only at the output boundary (uint8 RGB arrays, PNG files). Colormaps are matplotlib's
256-entry tables (``jet``, ``turbo``, ``viridis``, ``inferno``, ``magma`` or any matplotlib name);
``jet`` also works without matplotlib, from the same segment data matplotlib uses.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from camlens.errors import CamlensValueError
from camlens.images.load import ImageLike, to_rgb
from camlens.maps import as_heatmaps, upsample

# Matplotlib's "jet" as piecewise-linear segments: (x, value) per channel (matplotlib's _jet_data).
_JET = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}

Box = tuple[int, int, int, int]


def colormap_names() -> list[str]:
    """The colormap names ``colorize`` accepts (matplotlib's, without the ``_r`` reversals)."""
    try:
        import matplotlib
    except ImportError:
        return ["jet"]
    return sorted((n for n in matplotlib.colormaps if not n.endswith("_r")), key=str.lower)


@lru_cache(maxsize=32)
def _table(name: str) -> np.ndarray:
    try:
        import matplotlib
    except ImportError as error:
        if name == "jet":
            x = np.linspace(0.0, 1.0, 256)
            points = [np.array(_JET[c]).T for c in ("red", "green", "blue")]
            return np.stack([np.interp(x, xp, fp) for xp, fp in points], 1)
        raise CamlensValueError(
            f"colormap {name!r} needs matplotlib (pip install matplotlib); 'jet' works without"
        ) from error
    if not isinstance(name, str) or name not in matplotlib.colormaps:
        close = difflib.get_close_matches(str(name), list(matplotlib.colormaps), n=3)
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        raise CamlensValueError(
            f"unknown colormap {name!r}; {hint}valid names: {', '.join(colormap_names())} "
            "(add _r to reverse any of them)"
        )
    return np.asarray(matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3])


def colormap_table(name: str = "jet") -> np.ndarray:
    """The (256, 3) float table in [0, 1] of a colormap; an unknown name lists the valid ones."""
    return _table(name).copy()


def colorize_tensor(heatmap: torch.Tensor | np.ndarray, colormap: str = "jet") -> torch.Tensor:
    """Maps (..., H, W) in [0, 1] as float32 RGB (..., H, W, 3) in [0, 1], one table lookup."""
    values = as_heatmaps(heatmap)
    table = torch.from_numpy(_table(colormap)).float()
    index = (values.clamp(0, 1) * 255.0 + 0.5).long().clamp(0, 255)
    return table[index]


def colorize(heatmap: torch.Tensor | np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Maps (H, W) or (B, H, W) in [0, 1] as uint8 RGB (..., H, W, 3)."""
    return _to_uint8(colorize_tensor(heatmap, colormap))


def _to_uint8(values: torch.Tensor) -> np.ndarray:
    return (values * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy()


def _bilinear_axis(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows (i0, i1) and weights of i1 for a bilinear resize along one axis, as
    ``F.interpolate(..., align_corners=False)`` computes them."""
    source = np.maximum((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (source - low).astype(np.float32)


def resize_map(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """A float32 (h, w) map resized bilinearly to (height, width) with numpy alone (the same
    sampling as :func:`camlens.maps.upsample`, within float32 rounding). Rendering threads use it
    so that they never take torch's thread pool from the model running beside them."""
    if values.shape == (height, width):
        return values
    r0, r1, wr = _bilinear_axis(values.shape[0], height)
    c0, c1, wc = _bilinear_axis(values.shape[1], width)
    rows = values[r0] * (1 - wr)[:, None] + values[r1] * wr[:, None]
    return rows[:, c0] * (1 - wc) + rows[:, c1] * wc


def overlay(
    image: ImageLike,
    heatmap: torch.Tensor | np.ndarray,
    colormap: str = "jet",
    alpha: float = 0.5,
    threshold: float | None = None,
) -> np.ndarray:
    """Blend a coloured heatmap over ``image``; returns uint8 RGB at the image's own size.

    The map is resized to the image (never the image to the map), then
    ``out = (1 - a) * image + a * colour(heatmap)`` with ``a = alpha``; with ``threshold``, pixels
    whose heatmap value is below it keep the plain image (the MURA tutorial's ``cam < 0.2``).
    Computed with numpy (about 10 ms for 640x480 on one core).
    """
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise CamlensValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    picture = to_rgb(image)
    if isinstance(heatmap, torch.Tensor):  # no torch op here: numpy from the tensor's memory
        heatmap = heatmap.detach().cpu().numpy()
    values = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
    if values.ndim != 2:
        raise CamlensValueError(f"expected heatmap of shape (H, W), got {tuple(values.shape)}")
    height, width = picture.shape[:2]
    resized = np.clip(resize_map(values, height, width), 0.0, 1.0)
    table = (_table(colormap) * 255.0).astype(np.float32)
    colour = np.take(table, (resized * 255.0 + 0.5).astype(np.uint8), axis=0)
    weight = np.full((height, width, 1), np.float32(alpha), dtype=np.float32)
    if threshold is not None:
        weight[resized < threshold] = 0.0
    blended = (1.0 - weight) * picture + weight * colour
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def label_text(name: str, probability: float) -> str:
    """``"dog 97.3%"``: a class name and its probability (name alone when it is NaN)."""
    if probability != probability:  # NaN: a callable target has no probability
        return name
    return f"{name} {probability * 100:.1f}%"


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_label(image: ImageLike, text: str) -> np.ndarray:
    """``text`` in the top-left corner on a dark band, its size scaled to the image (min 10 px,
    smaller down to 8 px where the text would not fit the image's width)."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(to_rgb(image))
    size = max(10, round(min(picture.size) * 0.06))
    draw = ImageDraw.Draw(picture)
    font = _font(size)
    pad = max(2, size // 4)
    left, top, right, bottom = draw.textbbox((pad, pad), text, font=font)
    if right + pad > picture.width and size > 8:  # too wide for a small image: shrink to fit
        size = max(8, int(size * (picture.width - 2 * pad) / max(right - pad, 1)))
        font = _font(size)
        left, top, right, bottom = draw.textbbox((pad, pad), text, font=font)
    draw.rectangle((0, 0, right + pad, bottom + pad), fill=(0, 0, 0))
    draw.text((pad, pad), text, fill=(255, 255, 255), font=font)
    return np.asarray(picture)


def draw_boxes(
    image: ImageLike,
    boxes: Sequence[Box],
    color: tuple[int, int, int] = (0, 255, 0),
    width: int | None = None,
) -> np.ndarray:
    """Rectangles ``(x0, y0, x1, y1)`` (both corners inside, image pixels) drawn on ``image``."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(to_rgb(image))
    line = width or max(1, round(min(picture.size) / 150))
    draw = ImageDraw.Draw(picture)
    for box in boxes:
        x0, y0, x1, y1 = (int(v) for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=color, width=line)
    return np.asarray(picture)


def contour_masks(heatmap: torch.Tensor | np.ndarray, levels: Sequence[float]) -> torch.Tensor:
    """Boolean (L, ..., H, W): pixels at or above each level that touch a pixel below it."""
    values = as_heatmaps(heatmap)
    flat = values.reshape(-1, 1, *values.shape[-2:])
    out = []
    for level in levels:
        inside = (flat >= level).float()
        # a pixel is on the contour when it is inside and one of its 8 neighbours is not
        eroded = -F.max_pool2d(-inside, 3, stride=1, padding=1)
        out.append(((inside - eroded) > 0).reshape(values.shape))
    return torch.stack(out) if out else torch.zeros((0, *values.shape), dtype=torch.bool)


def draw_contours(
    image: ImageLike,
    heatmap: torch.Tensor | np.ndarray,
    levels: Sequence[float] = (0.5,),
    color: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Iso-lines of ``heatmap`` (resized to the image) at ``levels``, about 1/200 of it thick."""
    picture = torch.tensor(to_rgb(image))
    values = as_heatmaps(heatmap)
    if values.ndim != 2:
        raise CamlensValueError(f"expected heatmap of shape (H, W), got {tuple(values.shape)}")
    height, width = picture.shape[:2]
    values = upsample(values[None], (height, width))[0]
    lines = contour_masks(values, levels).any(dim=0).float()[None, None]
    thick = max(1, round(min(height, width) / 200))
    if thick > 1:
        lines = F.max_pool2d(lines, 2 * (thick // 2) + 1, stride=1, padding=thick // 2)
    picture[lines[0, 0] > 0] = torch.tensor(color, dtype=torch.uint8)
    return picture.numpy()


def panel(
    image: ImageLike,
    rows: Sequence[tuple[str, torch.Tensor | np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    title: str = "",
    colormap: str = "jet",
) -> None:
    """Save a PNG figure: one row per method, columns original | heatmap | overlay.

    ``rows`` holds ``(method title, heatmap (h, w) in [0, 1], overlay uint8 (H, W, 3))``; the
    figure is :func:`camlens.visualize.figures.grid`'s.
    """
    with open(path, "wb") as handle:
        handle.write(panel_png(image, rows, title, colormap))


def panel_png(
    image: ImageLike,
    rows: Sequence[tuple[str, torch.Tensor | np.ndarray, np.ndarray]],
    title: str = "",
    colormap: str = "jet",
) -> bytes:
    """The PNG bytes of :func:`panel`'s figure (a matplotlib figure: slow, so runs make it only
    on request)."""
    from camlens.visualize.figures import figure_png, grid

    picture = to_rgb(image)
    cells = [
        [
            ("original", picture),
            (f"{name}: heatmap", as_heatmaps(heat).numpy()),
            (f"{name}: overlay", blended),
        ]
        for name, heat, blended in rows
    ]
    return figure_png(grid(cells or [[("original", picture)]], title, colormap))
