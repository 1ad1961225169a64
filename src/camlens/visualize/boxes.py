"""Bounding boxes from maps, as in the CAM paper's weakly supervised localisation.

Zhou et al. 2016 (*Learning Deep Features for Discriminative Localization*, section 3): "we
segment the regions of which the value is above 20% of the max value of the CAM. Then we take the
bounding box that covers the largest connected component". With ``threshold = t`` the mask is
``M = { p : m(p) >= t * max m }``; connected components use 8-connectivity (4 on request).
``largest=False`` returns a box around every component of at least ``min_area`` pixels instead.
Boxes are ``(x0, y0, x1, y1)`` with both corners inside (Pascal VOC), largest area first.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from camlens.errors import CamlensValueError
from camlens.maps import as_heatmaps

Box = tuple[int, int, int, int]


def components(masks: torch.Tensor, connectivity: int = 8) -> torch.Tensor:
    """Label the connected components of boolean masks (B, H, W).

    Returns int64 (B, H, W): 0 off the mask, and one positive id per component (the largest
    flat index + 1 of its pixels). Label propagation (each pixel takes its neighbours' maximum)
    with pointer jumping (each pixel then takes its label's label), batched, in torch.
    """
    if connectivity not in (4, 8):
        raise CamlensValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    masks = masks.bool()
    batch, height, width = masks.shape
    index = torch.arange(1, height * width + 1, dtype=torch.int64).reshape(1, height, width)
    labels = torch.where(masks, index, 0)
    if connectivity == 8:
        shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    else:
        shifts = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    while True:
        padded = F.pad(labels, (1, 1, 1, 1))
        best = labels
        for dy, dx in shifts:
            best = torch.maximum(best, padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width])
        best = torch.where(masks, best, 0)
        flat = best.reshape(batch, -1)
        jumped = flat.gather(1, (flat - 1).clamp_min(0)).reshape(batch, height, width)
        best = torch.where(masks, torch.maximum(best, jumped), 0)
        if torch.equal(best, labels):
            return labels
        labels = best


def boxes(
    heatmap: torch.Tensor | np.ndarray,
    threshold: float = 0.2,
    *,
    largest: bool = True,
    min_area: int = 1,
    connectivity: int = 8,
    size: tuple[int, int] | None = None,
) -> list[Box] | list[list[Box]]:
    """Boxes around the parts of ``heatmap`` at or above ``threshold`` times its maximum.

    ``heatmap``: (H, W) -> a list of boxes; (B, H, W) -> one list per map. ``largest=True`` (the
    CAM paper) keeps the largest component only; ``largest=False`` keeps every component with at
    least ``min_area`` pixels. ``size=(height, width)`` gives the boxes in pixels of an image of
    that size (a map pixel covers ``height / H`` by ``width / W`` image pixels); default: map
    pixels. A map whose maximum is not positive has no box.
    """
    if not 0.0 <= threshold <= 1.0:
        raise CamlensValueError(
            f"threshold must be in [0, 1] (a fraction of the max), got {threshold}"
        )
    values = as_heatmaps(heatmap)
    single = values.ndim == 2
    if single:
        values = values[None]
    batch, height, width = values.shape
    peak = values.reshape(batch, -1).amax(dim=1).reshape(batch, 1, 1)
    masks = (values >= threshold * peak) & (peak > 0)
    labels = components(masks, connectivity).reshape(batch, -1)
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    result: list[list[Box]] = []
    for b in range(batch):
        on = labels[b] > 0
        ids, inverse = torch.unique(labels[b][on], return_inverse=True)
        count = len(ids)
        area = torch.bincount(inverse, minlength=count)
        y, x = rows[on], cols[on]
        big = torch.iinfo(torch.int64).max
        y0 = torch.full((count,), big).scatter_reduce(0, inverse, y, "amin")
        x0 = torch.full((count,), big).scatter_reduce(0, inverse, x, "amin")
        y1 = torch.full((count,), -1).scatter_reduce(0, inverse, y, "amax")
        x1 = torch.full((count,), -1).scatter_reduce(0, inverse, x, "amax")
        order = sorted(range(count), key=lambda k: (-int(area[k]), int(y0[k]), int(x0[k])))
        if largest:
            order = order[:1]
        found = []
        for k in order:
            if int(area[k]) < min_area:
                continue
            box = (int(x0[k]), int(y0[k]), int(x1[k]), int(y1[k]))
            found.append(box if size is None else scale_box(box, (height, width), size))
        result.append(found)
    return result[0] if single else result


def scale_box(box: Box, shape: tuple[int, ...], size: tuple[int, int]) -> Box:
    """A box in the pixels of a map of ``shape`` (h, w) as the pixels of an image of ``size``
    (H, W) its cells cover (inclusive corners)."""
    x0, y0, x1, y1 = box
    sy, sx = size[0] / shape[0], size[1] / shape[1]
    return (
        int(math.floor(x0 * sx)),
        int(math.floor(y0 * sy)),
        min(size[1] - 1, int(math.ceil((x1 + 1) * sx)) - 1),
        min(size[0] - 1, int(math.ceil((y1 + 1) * sy)) - 1),
    )
