r"""One map per detection, so that two objects can be told apart.

:func:`explain_detections` runs a detector once on one image, keeps its detections scoring at
least ``threshold`` (or takes the reference boxes given), and explains every detection with its
own :func:`camlens.targets.detection` target, in one batch of copies of the image: map n is
explained by detection n's class score alone,

.. math:: s_n = p_{m(n)}, \qquad m(n) = \text{detection } n \text{ matched to itself}
   \ (\text{same label, IoU} \ge \tau).

A class-agnostic method (EigenCAM) gives one map for every detection; each detection's copy is
kept inside its box (zero outside) and min-max scaled there, as pytorch-grad-cam's EigenCAM
tutorial does for YOLO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from camlens import targets as targets_
from camlens.backends import TorchAdapter, adapter_for
from camlens.backends.locks import model_lock
from camlens.errors import CamlensTypeError, CamlensValueError, describe
from camlens.explanation import Explanation
from camlens.methods._registry import get


@dataclass
class Detections:
    """A detector's detections on one image and one explanation per detection.

    Attributes:
        boxes: float32 (N, 4), (x0, y0, x1, y1) in the input's pixels.
        labels: int64 (N,) class indices.
        scores: float32 (N,) the detector's class scores.
        explanation: the maps (N, H, W), map n for detection n.
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    explanation: Explanation

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def detections(
    model: Any, x: torch.Tensor, threshold: float = 0.5, limit: int = 20
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The detections of ``model`` on one image ``x`` (1, C, H, W) scoring at least ``threshold``,
    best first, at most ``limit``: boxes (N, 4), labels (N,), scores (N,) float32/int64 on the CPU.
    Raw head outputs (ultralytics) are reduced by per-class non-maximum suppression (IoU 0.7)."""
    adapter = adapter_for(model)
    if not isinstance(adapter, TorchAdapter):
        raise CamlensTypeError(f"detectors are PyTorch models, got {describe(model)}")
    with model_lock(adapter.model):  # no other call's hooks on this forward
        output = adapter.outputs(x)
    boxes, labels, scores = targets_.detections_of(output)[0]
    boxes, labels, scores = boxes.float(), labels.long(), scores.float()
    keep = scores >= threshold
    boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
    if not isinstance(output, list):  # raw anchors: one box per object after NMS
        from torchvision.ops import batched_nms

        kept = batched_nms(boxes, scores, labels, 0.7)
        boxes, labels, scores = boxes[kept], labels[kept], scores[kept]
    order = scores.argsort(descending=True)[:limit]
    return boxes[order].cpu(), labels[order].cpu(), scores[order].cpu()


def explain_detections(
    model: Any,
    x: torch.Tensor,
    method: str = "gradcam",
    *,
    boxes: Any = None,
    labels: Any = None,
    threshold: float = 0.5,
    iou: float = 0.5,
    limit: int = 20,
    layer: Any = "auto",
    **options: Any,
) -> Detections:
    """Explain each detection of ``model`` on the one image ``x`` (1, C, H, W) with ``method``.

    Without ``boxes`` the detector's own detections scoring at least ``threshold`` are explained
    (the best ``limit``); with ``boxes`` (N, 4) and ``labels`` (N,) those reference boxes are, each
    through the detection matched to it (same label, IoU >= ``iou``).
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] != 1:
        raise CamlensValueError(
            f"explain_detections takes one image x of shape (1, C, H, W), got {describe(x)}"
        )
    if boxes is None:
        found, names, scores = detections(model, x, threshold, limit)
    else:
        found = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        names = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        scores = torch.full((found.shape[0],), float("nan"))
    if found.shape[0] == 0:
        raise CamlensValueError(
            f"no detection to explain: none scores at least threshold={threshold}; lower it"
        )
    explainer = get(method)(model, layer=layer, **options)
    target = targets_.detection(list(found[:, None]), list(names[:, None]), iou)
    exp = explainer(x.expand(found.shape[0], *x.shape[1:]), target=target)
    if type(explainer).__name__ == "EigenCAM":
        exp.maps = _in_boxes(exp.maps, found)
        exp.extra["in_box"] = True
    return Detections(found, names, exp.scores if boxes is not None else scores, exp)


def _in_boxes(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Maps (N, H, W) zeroed outside box n (pixels whose centre lies outside it) and min-max
    scaled to [0, 1] inside it; a constant box becomes zeros."""
    rows = torch.arange(maps.shape[1], dtype=torch.float32)[None, :, None] + 0.5
    cols = torch.arange(maps.shape[2], dtype=torch.float32)[None, None, :] + 0.5
    x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
    inside = (cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1)
    low = torch.where(inside, maps, torch.inf).amin(dim=(1, 2), keepdim=True)
    span = torch.where(inside, maps, -torch.inf).amax(dim=(1, 2), keepdim=True) - low
    scaled = (maps - low) / torch.where(span > 0, span, 1.0)
    return torch.where(inside & (span > 0), scaled, 0.0)
