"""Localisation: does the map find the object?

Boxes are ``(x0, y0, x1, y1)`` in pixels of the map with both corners inside the box (Pascal VOC
convention). ``boxes`` is one box per image ((B, 4) tensor or sequence) or, for several objects,
a sequence of B sequences of boxes: a hit on any of them counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch

from camlens.errors import CamlensTypeError, CamlensValueError, describe
from camlens.explanation import Explanation
from camlens.maps import check_batch
from camlens.targets import pairwise_iou
from camlens.visualize.boxes import boxes as cam_boxes

Box = tuple[int, int, int, int]


def _maps(maps: Any) -> torch.Tensor:
    if isinstance(maps, Explanation):
        maps = maps.maps
    if not isinstance(maps, torch.Tensor):
        raise CamlensTypeError(
            f"maps must be a torch.Tensor of shape (B, H, W) or an Explanation, got "
            f"{describe(maps)}"
        )
    check_batch(maps)
    return maps.detach().float()


def box_lists(boxes: Any, batch: int) -> list[list[Box]]:
    """``boxes`` as B lists of integer boxes (one or more per image)."""
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.tolist()
    try:
        items = list(boxes)
    except TypeError as error:
        raise CamlensTypeError(
            f"boxes must be a (B, 4) tensor or B lists of (x0, y0, x1, y1) boxes, got "
            f"{describe(boxes)}"
        ) from error
    if len(items) != batch:
        raise CamlensValueError(
            f"boxes has {len(items)} entries but there are {batch} maps; pass one box (or a list "
            "of boxes) per image"
        )
    out: list[list[Box]] = []
    for item in items:
        group = [item] if len(item) == 4 and not isinstance(item[0], Sequence) else list(item)
        checked = []
        for box in group:
            if len(box) != 4:
                raise CamlensValueError(f"a box is (x0, y0, x1, y1), got {box!r}")
            x0, y0, x1, y1 = (int(round(float(v))) for v in box)
            if x1 < x0 or y1 < y0:
                raise CamlensValueError(
                    f"a box needs x0 <= x1 and y0 <= y1, got {(x0, y0, x1, y1)}"
                )
            checked.append((x0, y0, x1, y1))
        if not checked:
            raise CamlensValueError("every image needs at least one ground-truth box")
        out.append(checked)
    return out


def box_masks(boxes: Any, shape: tuple[int, int, int]) -> torch.Tensor:
    """The union of each image's boxes as a bool mask (B, H, W)."""
    batch, height, width = shape
    masks = torch.zeros(shape, dtype=torch.bool)
    for index, group in enumerate(box_lists(boxes, batch)):
        for x0, y0, x1, y1 in group:
            masks[index, max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
    return masks


def pointing_game(maps: Any, boxes: Any, tolerance: float = 0) -> torch.Tensor:
    r"""Pointing game (Zhang et al. 2018, Top-down Neural Attention by Excitation Backprop):
    1.0 where a maximum of the map lies in a ground-truth box, else 0.0 (B,).

    With ``tolerance`` :math:`\tau` > 0 (the paper uses 15 pixels) a maximum at distance at most
    :math:`\tau` from a box counts as a hit. Every pixel equal to the maximum is a candidate, as
    in Quantus' ``PointingGame``.
    """
    values = _maps(maps)
    batch, height, width = values.shape
    if tolerance < 0:
        raise CamlensValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    peak = values == values.amax(dim=(1, 2), keepdim=True)
    rows = torch.arange(height, dtype=torch.float32)[:, None]
    cols = torch.arange(width, dtype=torch.float32)[None, :]
    hits = torch.zeros(batch)
    for index, group in enumerate(box_lists(boxes, batch)):
        near = torch.zeros(height, width, dtype=torch.bool)
        for x0, y0, x1, y1 in group:
            dx = (x0 - cols).clamp_min(0) + (cols - x1).clamp_min(0)
            dy = (y0 - rows).clamp_min(0) + (rows - y1).clamp_min(0)
            near |= dx**2 + dy**2 <= float(tolerance) ** 2
        hits[index] = float(bool((peak[index].cpu() & near).any()))
    return hits


def energy_pointing_game(maps: Any, boxes: Any) -> torch.Tensor:
    r"""Energy-based pointing game (Wang et al. 2020, Score-CAM): the share of the map's mass
    inside the boxes, (B,); the same as Quantus' ``RelevanceMassAccuracy``.

    .. math:: \frac{\sum_{(i,j) \in \mathrm{box}} M_{ij}}{\sum_{ij} M_{ij}}

    Maps should be non-negative (``Explanation.maps`` are); a map of zero mass gives NaN.
    """
    values = _maps(maps).cpu()
    inside = box_masks(boxes, (values.shape[0], values.shape[1], values.shape[2]))
    return (values * inside).sum(dim=(1, 2)) / values.sum(dim=(1, 2))


def _edges(boxes: Sequence[Box]) -> torch.Tensor:
    """Boxes with inclusive pixel corners as continuous edges (x0, y0, x1 + 1, y1 + 1), float64,
    so that :func:`camlens.targets.pairwise_iou` gives their pixel-count IoU."""
    return torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4) + torch.tensor([0, 0, 1, 1])


def box_iou(maps: Any, boxes: Any, threshold: float = 0.2) -> torch.Tensor:
    """IoU (B,) of the CAM paper's box (Zhou et al. 2016: ``threshold`` x max, largest
    connected component) with the best-matching ground-truth box; 0 for an all-zero map.
    ``box_iou(...) >= 0.5`` is the per-image localisation accuracy."""
    values = _maps(maps).cpu()
    if not 0 <= threshold <= 1:
        raise CamlensValueError(
            f"threshold must be in [0, 1] (a share of the max), got {threshold}"
        )
    # the largest 8-connected region of each map: one list (empty for an all-zero map) per map
    found = cast(list[list[Box]], cam_boxes(values, threshold))
    out = torch.zeros(values.shape[0])
    for index, group in enumerate(box_lists(boxes, values.shape[0])):
        if found[index]:
            out[index] = float(pairwise_iou(_edges(found[index][:1]), _edges(group)).max())
    return out


def localisation_error(
    maps: Any,
    boxes: Any,
    predictions: Any,
    labels: Any,
    threshold: float = 0.2,
    iou_threshold: float = 0.5,
) -> torch.Tensor:
    """Top-1 localisation error per image (ILSVRC, as in the CAM paper): 1.0 unless the
    predicted class is right and the CAM box has IoU >= ``iou_threshold`` with a true box."""
    predicted = torch.as_tensor(predictions).reshape(-1).cpu()
    truth = torch.as_tensor(labels).reshape(-1).cpu()
    overlaps = box_iou(maps, boxes, threshold)
    if predicted.shape != overlaps.shape or truth.shape != overlaps.shape:
        raise CamlensValueError(
            f"predictions and labels need one entry per map ({overlaps.shape[0]}), got "
            f"{tuple(predicted.shape)} and {tuple(truth.shape)}"
        )
    correct = (predicted == truth) & (overlaps >= iou_threshold)
    return 1.0 - correct.float()
