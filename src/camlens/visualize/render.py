"""Drawing on pictures: labels, contours, boxes, and the saved panel figure.

The colouring of maps and the overlay live in :mod:`camlens.visualize.overlay` and are re-exported
here (``camlens.visualize.render.overlay`` is the documented path); the panel's matplotlib figure
is :mod:`camlens.visualize.figures`'. Numpy appears only at the output boundary (uint8 RGB arrays,
PNG files).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from camlens.errors import CamlensValueError
from camlens.images.load import ImageLike, to_rgb
from camlens.maps import as_heatmaps, upsample
from camlens.visualize.overlay import (
    colorize,
    colorize_tensor,
    colormap_names,
    colormap_table,
    label_text,
    overlay,
    resize_map,
)

Box = tuple[int, int, int, int]


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

    ``rows`` holds ``(method title, heatmap (h, w) in [0, 1], overlay uint8 (H, W, 3))``
    (:func:`panel_png`).
    """
    with open(path, "wb") as handle:
        handle.write(panel_png(image, rows, title, colormap))


#: A panel's cell width in pixels and the height of its caption and title bands.
PANEL_CELL, PANEL_CAPTION = 300, 22


def panel_png(
    image: ImageLike,
    rows: Sequence[tuple[str, torch.Tensor | np.ndarray, np.ndarray]],
    title: str = "",
    colormap: str = "jet",
) -> bytes:
    """The PNG bytes of :func:`panel`: one row per method, cells original | heatmap | overlay,
    each :data:`PANEL_CELL` px wide with a caption above, the title on top. Drawn with Pillow
    (29 methods: about 1.3 s, mostly PNG encoding; matplotlib's figure took 7.5 s)."""
    import io

    from PIL import Image, ImageDraw

    picture = to_rgb(image)
    height = max(1, round(PANEL_CELL * picture.shape[0] / picture.shape[1]))

    def tile(pixels: np.ndarray) -> Any:
        return Image.fromarray(np.ascontiguousarray(pixels)).resize(
            (PANEL_CELL, height), Image.Resampling.BILINEAR
        )

    original = tile(picture)  # the same in every row: resized once
    cells = [
        [
            ("original", original),
            (
                f"{name}: heatmap",
                Image.fromarray(
                    colorize(resize_map(as_heatmaps(heat).numpy(), height, PANEL_CELL), colormap)
                ),
            ),
            (f"{name}: overlay", tile(blended)),
        ]
        for name, heat, blended in rows
    ] or [[("original", original)]]
    top = PANEL_CAPTION if title else 0
    sheet = Image.new("RGB", (3 * PANEL_CELL, top + len(cells) * (height + PANEL_CAPTION)), "white")
    draw, font = ImageDraw.Draw(sheet), _font(PANEL_CAPTION - 8)
    if title:
        draw.text(
            (sheet.width // 2, PANEL_CAPTION // 2), title, fill="black", font=font, anchor="mm"
        )
    for r, row in enumerate(cells):
        y = top + r * (height + PANEL_CAPTION)
        for c, (name, cell) in enumerate(row):
            x = c * PANEL_CELL
            draw.text(
                (x + PANEL_CELL // 2, y + PANEL_CAPTION // 2),
                name,
                fill="black",
                font=font,
                anchor="mm",
            )
            sheet.paste(cell, (x, y + PANEL_CAPTION))
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG")
    return buffer.getvalue()


__all__ = [
    "Box",
    "colorize",
    "colorize_tensor",
    "colormap_names",
    "colormap_table",
    "contour_masks",
    "draw_boxes",
    "draw_contours",
    "draw_label",
    "label_text",
    "overlay",
    "panel",
    "panel_png",
    "resize_map",
]
