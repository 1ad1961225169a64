"""How an :class:`~camlens.Explanation` shows itself in a notebook: HTML and PNG.

Each image gets three pictures: the input (each channel of the preprocessed batch min-max scaled
back to [0, 255]), the heatmap and the overlay, captioned with the explained class and its
probability. The HTML needs only Pillow; the PNG is a matplotlib figure (``None`` without it).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from camlens.errors import CamlensImportError
from camlens.visualize.figures import figure_png, grid, input_images, plot
from camlens.visualize.overlay import colorize, label_text, overlay

if TYPE_CHECKING:
    from camlens.explanation import Explanation

#: At most this many images are shown; the rest are counted.
SHOWN = 8


def _png(picture: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _originals(exp: Explanation) -> list[np.ndarray] | None:
    x = exp.inputs
    if x is None or x.ndim != 4 or x.shape[1] not in (1, 3):
        return None
    return input_images(exp)


def _head(exp: Explanation, n: int) -> Explanation:
    """The first ``n`` images of ``exp`` (method-specific ``extra`` left out)."""
    inputs = None if exp.inputs is None else exp.inputs[:n]
    return replace(
        exp,
        maps=exp.maps[:n],
        raw=exp.raw[:n],
        targets=exp.targets[:n],
        scores=exp.scores[:n],
        probs=exp.probs[:n],
        extra={},
        inputs=inputs,
    )


def _caption(exp: Explanation, i: int) -> str:
    return label_text(f"class {int(exp.targets[i])}", float(exp.probs[i]))


def _heat(exp: Explanation, i: int):
    """Image ``i``'s map (H, W) in [0, 1]; a clip's or volume's (T, H, W) shows its middle frame."""
    heat = exp.maps[i].detach().float().cpu().clamp(0, 1)
    return heat[heat.shape[0] // 2] if heat.ndim == 3 else heat


def to_html(exp: Explanation, size: int = 160) -> str:
    """An HTML table: one row per image (the first :data:`SHOWN`), original | heatmap | overlay."""
    originals = _originals(exp)
    heads = (["original"] if originals else []) + ["heatmap"] + (["overlay"] if originals else [])
    cell = f'style="width:{size}px;image-rendering:auto"'
    rows = []
    for i in range(min(len(exp), SHOWN)):
        heat = _heat(exp, i)
        pictures = [colorize(heat)]
        if originals:
            pictures = [originals[i], pictures[0], overlay(originals[i], heat)]
        tds = "".join(f'<td><img {cell} src="{_png(p)}"></td>' for p in pictures)
        rows.append(f"<tr><td>{i}</td><td>{html.escape(_caption(exp, i))}</td>{tds}</tr>")
    more = len(exp) - SHOWN
    tail = f"<p>&hellip; and {more} more</p>" if more > 0 else ""
    header = "".join(f"<th>{h}</th>" for h in ["image", "class"] + heads)
    return (
        f"<div><p><code>{html.escape(repr(exp))}</code></p>"
        f"<table><tr>{header}</tr>{''.join(rows)}</table>{tail}</div>"
    )


def to_png(exp: Explanation) -> bytes | None:
    """A matplotlib figure of the first :data:`SHOWN` images as PNG bytes, or ``None``."""
    try:
        if _originals(exp) is None:
            rows = [
                [(_caption(exp, i), _heat(exp, i).numpy())] for i in range(min(len(exp), SHOWN))
            ]
            return figure_png(grid(rows, exp.method))
        return figure_png(plot(None, _head(exp, SHOWN), kinds=("heatmap", "overlay")))
    except CamlensImportError:
        return None
