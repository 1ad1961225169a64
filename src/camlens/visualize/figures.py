"""Matplotlib figures of explanations: a grid of images by methods, and the saved panel.

matplotlib is optional (``pip install "camlens[vision]"``); without it these functions raise
:class:`camlens.CamlensImportError` and everything else in camlens works.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeGuard, cast

import numpy as np
import torch

from camlens.errors import CamlensImportError, CamlensValueError, describe
from camlens.images.labels import class_name
from camlens.images.load import ImageLike, to_rgb
from camlens.visualize.overlay import label_text, overlay

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from camlens.explanation import Explanation

#: One cell of a grid: (title, picture). A picture is uint8 RGB (H, W, 3), or a float map (h, w)
#: in [0, 1] drawn with the colormap over the extent (W, H) of the row's first picture.
Cell = tuple[str, np.ndarray]

KINDS = ("heatmap", "overlay")


@lru_cache(maxsize=1)
def _figure_class():
    """matplotlib's Figure, showing itself as a PNG in a notebook (no pyplot needed), and the Agg
    canvas."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise CamlensImportError(
            "camlens.plot, the panel figures and the metrics' plots need matplotlib; install "
            'it with pip install matplotlib (or pip install "camlens[vision]")'
        ) from error

    class NotebookFigure(Figure):
        """A matplotlib Figure that Jupyter displays as a PNG."""

        def _repr_png_(self) -> bytes:
            return figure_png(self)

    return NotebookFigure, FigureCanvasAgg


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width`` x ``height`` inches on its own Agg canvas: not registered
    with pyplot, matplotlib's backend left as the user set it; ``savefig`` writes it."""
    Figure, FigureCanvasAgg = _figure_class()
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def grid(
    rows: Sequence[Sequence[Cell]], title: str = "", colormap: str = "jet", cell: float = 3.0
) -> Figure:
    """A figure of ``rows`` of cells (see :data:`Cell`), ``cell`` inches wide each, axes off."""
    columns = max((len(row) for row in rows), default=1)
    first = next((p for row in rows for _, p in row if p.ndim == 3), None)
    aspect = first.shape[0] / first.shape[1] if first is not None else 1.0
    height = max(1, len(rows)) * cell * aspect + (0.5 if title else 0.2)
    figure = new_figure(columns * cell, height)
    axes = figure.subplots(max(1, len(rows)), columns, squeeze=False)
    for row, cells in zip(axes, rows):
        pictures = [p for _, p in cells if p.ndim == 3]
        extent_h, extent_w = pictures[0].shape[:2] if pictures else cells[0][1].shape[:2]
        for axis, (name, picture) in zip(row, cells):
            if picture.ndim == 2:
                extent = (0, extent_w, extent_h, 0)
                axis.imshow(picture, cmap=colormap, vmin=0, vmax=1, extent=extent)
            else:
                axis.imshow(picture)
            axis.set_title(name, fontsize=9)
    for axis in axes.flat:
        axis.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def input_images(exp: Explanation) -> list[np.ndarray]:
    """The explained batch as uint8 RGB pictures, for display.

    The stored input ``exp.inputs`` (B, C, H, W) is preprocessed, so each channel is min-max
    scaled to [0, 255] (this undoes any per-channel ``(x - mean) / std``); one channel is shown
    as gray.
    """
    x = exp.inputs
    if x is None or x.ndim != 4 or x.shape[1] not in (1, 3):
        shape = None if x is None else tuple(x.shape)
        raise CamlensValueError(
            f"images: this explanation keeps no (B, 1 or 3, H, W) input (got {shape}); "
            "pass the images, e.g. camlens.plot(images, exp)"
        )
    low = x.amin(dim=(2, 3), keepdim=True)
    span = (x.amax(dim=(2, 3), keepdim=True) - low).clamp_min(1e-12)
    scaled = ((x - low) / span * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
    return [to_rgb(p.permute(1, 2, 0).numpy()) for p in scaled]


def plot(
    images: Sequence[ImageLike] | None,
    explanations: Explanation | Sequence[Explanation],
    *,
    kinds: Sequence[str] = ("overlay",),
    labels: Sequence[str] | None = None,
    colormap: str = "jet",
    alpha: float = 0.5,
    threshold: float | None = None,
    title: str = "",
    cell: float = 2.5,
) -> Figure:
    """A matplotlib grid: one row per image, the original then each method's ``kinds``.

    Columns are ``original`` followed, for every explanation, by its ``"heatmap"`` (the map, in
    ``colormap``) and/or ``"overlay"`` (:func:`camlens.overlay` at the image's own size, with
    ``alpha`` and ``threshold``); each cell is titled with the method, the explained class
    (``labels[target]`` or its index) and its probability. ``images=None`` shows the explained
    inputs themselves (see :func:`input_images`). Returns the ``matplotlib.figure.Figure``
    (not registered with pyplot: a notebook shows it, ``fig.savefig(path)`` writes it).
    """
    exps: list[Explanation] = (
        [explanations]
        if _is_explanation(explanations)
        else list(cast("Sequence[Explanation]", explanations))
    )
    if not exps or not all(_is_explanation(e) for e in exps):
        raise CamlensValueError(
            "explanations: expected an Explanation or a non-empty sequence of them, got "
            f"{describe(explanations)}"
        )
    unknown = [k for k in kinds if k not in KINDS]
    if not kinds or unknown or isinstance(kinds, str):
        raise CamlensValueError(
            f"kinds: expected a non-empty sequence of {', '.join(map(repr, KINDS))}, got {kinds!r}"
        )
    pictures = input_images(exps[0]) if images is None else [to_rgb(i) for i in images]
    sizes = {len(e) for e in exps}
    if sizes != {len(pictures)}:
        raise CamlensValueError(
            f"explanations: expected {len(pictures)} maps each, one per image, got "
            f"{', '.join(f'{e.method}: {len(e)}' for e in exps)}"
        )
    rows = []
    for i, picture in enumerate(pictures):
        cells: list[Cell] = [("original", picture)]
        for exp in exps:
            heat = exp.maps[i].detach().float().cpu().clamp(0, 1).numpy()
            target = int(exp.targets[i])
            name = class_name(tuple(labels), target) if labels is not None else f"class {target}"
            caption = label_text(name, float(exp.probs[i]))
            for kind in kinds:
                if kind == "heatmap":
                    both = "overlay" in kinds
                    heading = f"{exp.method} heatmap" if both else f"{exp.method}: {caption}"
                    cells.append((heading, heat))
                else:
                    blended = overlay(picture, heat, colormap, alpha, threshold)
                    cells.append((f"{exp.method}: {caption}", blended))
        rows.append(cells)
    return grid(rows, title, colormap, cell)


def _is_explanation(value: Any) -> TypeGuard[Explanation]:
    """Whether ``value`` has what :func:`plot` reads from an :class:`~camlens.Explanation`
    (checked by its fields: :mod:`camlens.explanation` imports this module's display)."""
    return all(hasattr(value, name) for name in ("maps", "targets", "probs", "method"))


def figure_png(figure: Any, dpi: int = 100) -> bytes:
    """A figure as PNG bytes (no software or date metadata, so equal figures give equal bytes)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()
