"""Which score is explained: resolving ``target`` against a batch of logits.

``target`` is ``None`` (the predicted class), an ``int`` (that class for every image), a sequence
of B ints, or a callable ``logits -> (B,) scores``. A one-logit (binary) head explains class 1 as
the logit and class 0 as its negative, so that ``sigmoid(score)`` is that class's probability.
:class:`OutputValue` (``target=("output", K)`` or ``"output:K"`` on an explainer) is the K-th
output value of a model that is not a classifier, as it is (no binary-head rule, no probability).
Several targets per image (``"top3"``, ``"above:0.5"``, one list per image) are planned in
:mod:`camlens.targets.several`.

Dense and detection models: :func:`segmentation` and :func:`detection` build an
:class:`OutputTarget`, a callable that reads the model's whole output (a dict with ``"out"``, an
object with ``.logits``, a detector's list of dicts) instead of a (B, K) logit matrix.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch

from camlens.errors import CamlensTypeError, CamlensValueError, describe

Target: TypeAlias = (
    "int | Sequence[int] | Sequence[Sequence[int]] | torch.Tensor | str | tuple[str, int] | "
    "Callable[[torch.Tensor], torch.Tensor] | ResolvedTarget | None"
)


#: ``activation``: how probabilities are read from logits (None: softmax, sigmoid for one logit).
ACTIVATIONS = ("softmax", "sigmoid", "none")


@dataclass
class ResolvedTarget:
    """Targets (B,) int64 (-1 for a callable; K for an :class:`OutputValue`), the callable, if one
    was given, and the ``activation`` of the probabilities (None: the default)."""

    indices: torch.Tensor
    function: Callable[[torch.Tensor], torch.Tensor] | None = None
    activation: str | None = None

    def rows(self, owners: torch.Tensor) -> ResolvedTarget:
        """The target of a derived batch whose row n is a copy of image ``owners[n]`` (masked,
        noisy, occluded): its class, or an :class:`OutputTarget`'s per-image references taken
        for that image (:meth:`OutputTarget.rows`); a plain callable applies as it is."""
        owners = owners.cpu()
        indices = self.indices[owners]
        if isinstance(self.function, OutputTarget):
            return ResolvedTarget(indices, self.function.rows(owners), self.activation)
        return ResolvedTarget(indices, self.function, self.activation)


class OutputValue:
    """The K-th output value of a model that is not a classifier: ``logits[:, K]`` for any (B, N)
    output, N = 1 included (no binary-head rule); its probability is NaN unless an activation is
    asked for."""

    def __init__(self, index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise CamlensValueError(
                f"output:K takes an output index K >= 0, got {index!r}; pass such as 'output:0'"
            )
        self.index = index

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise CamlensValueError(
                f"output:{self.index} explains one value of a (B, N) output, got {describe(logits)}"
            )
        if self.index >= logits.shape[1]:
            raise CamlensValueError(
                f"output:{self.index} is out of range for a model with {logits.shape[1]} outputs "
                f"(expected 0..{logits.shape[1] - 1})"
            )
        return logits[:, self.index]

    def __repr__(self) -> str:
        return f"output:{self.index}"


def batch_of(output: Any) -> int:
    """The batch size of a model output: a tensor's first dimension, a list's length (one dict
    per image from a detector) or its first tensor's, a dict's or an object's ``.logits`` first
    tensor's."""
    if isinstance(output, torch.Tensor):
        return int(output.shape[0])
    if isinstance(output, (list, tuple)):
        if output and isinstance(output[0], torch.Tensor):  # (raw head, features): ultralytics
            return int(output[0].shape[0])
        return len(output)  # one dict per image (torchvision's detectors)
    if isinstance(output, dict):
        return batch_of(next(iter(output.values())))
    return batch_of(output.logits)


def resolve(target: Target, logits: Any) -> ResolvedTarget:
    """Turn ``target`` into per-image class indices for ``logits`` of shape (B, K) (any model
    output for an :class:`OutputTarget` or other callable)."""
    batch = batch_of(logits)
    if isinstance(target, ResolvedTarget):  # planned by camlens.targets.several
        if target.indices.numel() != batch:
            raise CamlensValueError(
                f"the planned target has {target.indices.numel()} rows but the batch has {batch}"
            )
        return target
    if isinstance(target, OutputValue):
        target(logits)  # checks the index against the output
        return ResolvedTarget(torch.full((batch,), target.index, dtype=torch.int64), target)
    if callable(target) and not isinstance(target, torch.Tensor):
        return ResolvedTarget(torch.full((batch,), -1, dtype=torch.int64), target)
    if logits.ndim != 2:
        dense = " (camlens.targets.segmentation(CLASS) for a segmentation model)"
        raise CamlensValueError(
            f"the model's output has shape {tuple(logits.shape)}, not (B, classes); pass "
            "target=callable mapping the output to (B,) scores"
            + (dense if logits.ndim == 4 else "")
        )
    classes = logits.shape[1]
    if target is None:
        indices = (logits[:, 0] > 0).long() if classes == 1 else logits.argmax(dim=1)
        return ResolvedTarget(indices.detach().cpu().to(torch.int64))
    if isinstance(target, (bool, str)) or not isinstance(target, (int, Sequence, torch.Tensor)):
        raise CamlensTypeError(
            f"target must be None, an int, a sequence of ints or a callable, got {describe(target)}"
        )
    if isinstance(target, int):
        indices = torch.full((batch,), target, dtype=torch.int64)
    else:
        try:
            indices = torch.as_tensor(target).reshape(-1).to(torch.int64)
        except (TypeError, ValueError, RuntimeError) as error:
            raise CamlensTypeError(
                f"target must be a sequence of ints, got {describe(target)}"
            ) from error
        if indices.numel() != batch:
            raise CamlensValueError(
                f"target has {indices.numel()} entries but the batch has {batch} images; pass "
                "one class per image or a single int"
            )
    valid = 2 if classes == 1 else classes
    bad = indices[(indices < 0) | (indices >= valid)]
    if bad.numel():
        raise CamlensValueError(
            f"target {int(bad[0])} is out of range for a model with {valid} classes "
            f"(expected 0..{valid - 1})"
        )
    return ResolvedTarget(indices)


def scores(logits: Any, target: ResolvedTarget) -> torch.Tensor:
    """The explained score of each image, differentiable, shape (B,)."""
    if target.function is not None:
        values = target.function(logits)
        batch = batch_of(logits)
        if not isinstance(values, torch.Tensor) or values.shape != (batch,):
            raise CamlensValueError(
                f"a callable target must return a tensor of shape (B,) = ({batch},), got "
                f"{describe(values)}"
            )
        return values
    indices = target.indices.to(logits.device)
    if logits.shape[1] == 1:
        sign = indices.to(logits.dtype) * 2 - 1
        return logits[:, 0] * sign
    return logits.gather(1, indices[:, None])[:, 0]


def class_probabilities(logits: torch.Tensor, activation: str | None = None) -> torch.Tensor:
    """Every class's probability (B, V), float32: softmax over the classes (None, "softmax"),
    each logit's sigmoid ("sigmoid": multi-label models) or the logits as they are ("none").
    A one-logit head has V = 2 classes: class 1 is the logit z, class 0 is -z (sigmoid: 1 -
    sigmoid(z), the same for softmax)."""
    logits = logits.detach().float()
    if logits.shape[1] == 1:
        signed = torch.cat([-logits, logits], dim=1)
        return signed if activation == "none" else torch.sigmoid(signed)
    if activation == "none":
        return logits
    return torch.sigmoid(logits) if activation == "sigmoid" else logits.softmax(dim=1)


def probabilities(logits: Any, target: ResolvedTarget) -> torch.Tensor:
    """Probability of each image's target under ``target.activation``
    (:func:`class_probabilities`), float32 (B,), CPU; NaN for activation "none" and for a
    callable target (an :class:`OutputValue` takes "sigmoid": the sigmoid of its value, or
    "softmax" over the outputs)."""
    nan = torch.full((batch_of(logits),), float("nan"))
    activation = target.activation
    if activation == "none":
        return nan
    if target.function is not None:
        if not isinstance(target.function, OutputValue) or activation is None:
            return nan
        if activation == "sigmoid":
            return torch.sigmoid(target.function(logits.detach().float())).cpu()
        return logits.detach().float().softmax(dim=1)[:, target.function.index].cpu()
    indices = target.indices.to(logits.device)
    return class_probabilities(logits, activation).gather(1, indices[:, None])[:, 0].cpu()


class OutputTarget:
    """A target that reads the model's whole output: ``target(output) -> (B,) scores``.

    The adapter hands it what the model returned (a detector's list of dicts, a segmentation
    model's ``{"out": ...}``) rather than a (B, K) logit matrix.
    """

    def __call__(self, output: Any) -> torch.Tensor:
        raise NotImplementedError

    def rows(self, owners: torch.Tensor) -> OutputTarget:
        """This target for a derived batch whose row n is a copy of image ``owners[n]``: per-image
        references (boxes, masks) taken for each row's image."""
        return self


def dense_logits(output: Any) -> torch.Tensor:
    """A segmentation output's logits (B, K, H, W): a tensor, a dict's ``"out"`` (torchvision) or
    ``"logits"``, an object's ``.logits`` (Hugging Face SegFormer and the like)."""
    value = output
    if isinstance(value, dict):
        value = value.get("out", value.get("logits"))
    elif not isinstance(value, torch.Tensor) and hasattr(value, "logits"):
        value = value.logits
    if not isinstance(value, torch.Tensor) or value.ndim != 4:
        raise CamlensValueError(
            "targets.segmentation expects the model to return logits of shape (B, K, H, W) as a "
            "tensor, a dict with 'out' or 'logits', or an object with .logits, got "
            f"{describe(value if isinstance(value, torch.Tensor) else output)}"
        )
    return value


def _class_map(logits: torch.Tensor, category: int) -> torch.Tensor:
    """The logit map (B, H, W) of ``category``; a one-channel model's class 0 is its negative."""
    classes = logits.shape[1]
    valid = 2 if classes == 1 else classes
    if not 0 <= category < valid:
        raise CamlensValueError(
            f"category {category} is out of range for a segmentation model with {valid} classes "
            f"(expected 0..{valid - 1})"
        )
    if classes == 1:
        return logits[:, 0] if category == 1 else -logits[:, 0]
    return logits[:, category]


class Segmentation(OutputTarget):
    r"""The logits of ``category`` summed over a region (see :func:`segmentation`).

    .. math:: s_b = \sum_{ij} M_{b,ij}\, z_{b,c,ij}, \qquad
       M_{b,ij} = \mathbb 1[\arg\max_k z_{b,k,ij} = c] \text{ without a mask}
    """

    def __init__(self, category: int, mask: Any = None) -> None:
        if isinstance(category, bool) or not isinstance(category, int):
            raise CamlensTypeError(f"category must be an int, got {describe(category)}")
        self.category = category
        self.mask = None if mask is None else torch.as_tensor(mask)
        if self.mask is not None and self.mask.ndim not in (2, 3):
            raise CamlensValueError(
                f"mask must have shape (H, W) or (B, H, W), got {tuple(self.mask.shape)}"
            )

    def rows(self, owners: torch.Tensor) -> Segmentation:
        """Each row summed over its image's mask (one shared mask or the predicted pixels: as
        is)."""
        if self.mask is None or self.mask.ndim == 2 or self.mask.shape[0] == 1:
            return self
        derived = copy.copy(self)
        derived.mask = self.mask[owners]
        return derived

    def region(self, logits: torch.Tensor) -> torch.Tensor:
        """The float mask (B, H, W) the class's logits are summed over, at the logits' size."""
        size = tuple(logits.shape[-2:])
        if self.mask is None:
            z = logits.detach()
            if z.shape[1] == 1:
                return ((z[:, 0] > 0).long() == self.category).to(logits.dtype)
            return (z.argmax(dim=1) == self.category).to(logits.dtype)
        mask = self.mask.to(device=logits.device, dtype=logits.dtype)
        mask = mask.expand(logits.shape[0], *mask.shape[-2:]) if mask.ndim == 2 else mask
        if mask.shape[0] != logits.shape[0]:
            raise CamlensValueError(
                f"mask has {mask.shape[0]} maps but the batch has {logits.shape[0]} images; pass "
                "one (H, W) mask or one per image"
            )
        if tuple(mask.shape[-2:]) != size:  # a mask at the input's size for a 1/4-size output
            mask = torch.nn.functional.interpolate(mask[:, None], size=size, mode="nearest")[:, 0]
        return mask

    def __call__(self, output: Any) -> torch.Tensor:
        logits = dense_logits(output)
        return (_class_map(logits, self.category) * self.region(logits)).sum(dim=(1, 2))

    def __repr__(self) -> str:
        region = "predicted pixels" if self.mask is None else "mask"
        return f"segmentation({self.category}, {region})"


def segmentation(category: int, mask: Any = None) -> Segmentation:
    """Target the region score of a segmentation model: the logits of ``category`` summed over
    ``mask`` ((H, W) or (B, H, W), any size: resized to the output's), or over the pixels predicted
    as ``category`` when no mask is given. A one-channel (sigmoid) model's class 1 is its logit
    and class 0 the negative, as for classifiers."""
    return Segmentation(category, mask)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU (N, M) of boxes (N, 4) and (M, 4) as (x0, y0, x1, y1) in continuous coordinates (the
    detectors' convention: area = (x1 - x0)(y1 - y0)): ``torchvision.ops.box_iou``, with 0
    where both boxes are empty (torchvision: nan), in torch alone (torchvision is optional)."""
    area_a = (a[:, 2] - a[:, 0]).clamp_min(0) * (a[:, 3] - a[:, 1]).clamp_min(0)
    area_b = (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)
    low = torch.maximum(a[:, None, :2], b[None, :, :2])
    high = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (high - low).clamp_min(0).prod(dim=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, 1.0), 0.0)


def detections_of(output: Any) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per image (boxes (N, 4) x0 y0 x1 y1, labels (N,), class scores (N,)) of a detector's output:
    torchvision's list of dicts, or an ultralytics head's raw (B, 4 + classes, anchors) tensor
    (boxes as centre and size, one sigmoid score per class; the label is the best class)."""
    if (
        isinstance(output, (list, tuple))
        and output
        and all(isinstance(i, dict) and {"boxes", "labels", "scores"} <= set(i) for i in output)
    ):
        return [(item["boxes"], item["labels"], item["scores"]) for item in output]
    raw = output[0] if isinstance(output, (list, tuple)) and output else output
    if isinstance(raw, torch.Tensor) and raw.ndim == 3 and raw.shape[1] > 4:
        found = []
        for row in raw:
            centre, size = row[:2].T, row[2:4].T
            boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
            best, labels = row[4:].max(dim=0)
            found.append((boxes, labels, best))
        return found
    raise CamlensValueError(
        "targets.detection expects a detector's output: a list of dicts with 'boxes', 'labels' "
        "and 'scores' (torchvision) or a (B, 4 + classes, anchors) tensor (ultralytics), got "
        f"{describe(output)}"
    )


def _boxes_per_image(boxes: Any, labels: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Reference boxes and labels as one (N, 4) / (N,) pair, or one pair per image."""
    per_image = isinstance(boxes, (list, tuple)) and any(
        isinstance(item, torch.Tensor)
        and item.ndim == 2
        or (isinstance(item, (list, tuple)) and item and isinstance(item[0], (list, tuple)))
        for item in boxes
    )
    groups = list(boxes) if per_image else [boxes]
    label_groups = list(labels) if per_image else [labels]
    if len(groups) != len(label_groups):
        raise CamlensValueError(
            f"detection got boxes for {len(groups)} images and labels for {len(label_groups)}"
        )
    out_boxes, out_labels = [], []
    for group, names in zip(groups, label_groups):
        tensor = (
            torch.as_tensor(group, dtype=torch.float32).reshape(-1, 4)
            if len(group)
            else (torch.zeros(0, 4))
        )
        if torch.as_tensor(group).numel() % 4:
            raise CamlensValueError(
                f"boxes must be (x0, y0, x1, y1) rows, got {describe(torch.as_tensor(group))}"
            )
        ids = torch.as_tensor(names, dtype=torch.int64).reshape(-1)
        if ids.numel() != tensor.shape[0]:
            raise CamlensValueError(
                f"detection got {tensor.shape[0]} boxes but {ids.numel()} labels; pass one label "
                "per box"
            )
        out_boxes.append(tensor)
        out_labels.append(ids)
    return out_boxes, out_labels


class Detection(OutputTarget):
    r"""Matched detections' class scores (see :func:`detection`).

    .. math:: s_b = \sum_{r} p_{m(r)}, \qquad m(r) = \arg\max_{d:\ \ell_d = \ell_r,\
       \mathrm{IoU}(d, r) \ge \tau} \mathrm{IoU}(d, r)

    A reference box with no such detection adds 0.
    """

    def __init__(self, boxes: Any, labels: Any, iou: float = 0.5) -> None:
        if isinstance(iou, bool) or not isinstance(iou, (int, float)) or not 0 <= iou <= 1:
            raise CamlensValueError(f"iou must be a number in [0, 1], got {iou!r}")
        self.boxes, self.labels = _boxes_per_image(boxes, labels)
        self.iou = float(iou)
        self.strict = True  # no match in any image is an error (the intact images)

    def rows(self, owners: torch.Tensor) -> Detection:
        """Each row matched against its image's boxes; a perturbed copy whose detection is gone
        scores 0 instead of raising."""
        derived = copy.copy(self)
        if len(self.boxes) > 1:
            derived.boxes = [self.boxes[int(i)] for i in owners]
            derived.labels = [self.labels[int(i)] for i in owners]
        derived.strict = False
        return derived

    def matches(self, output: Any) -> list[list[int]]:
        """For each image, the index of the detection matched to each reference box (-1: none)."""
        found = detections_of(output)
        if len(self.boxes) not in (1, len(found)):
            raise CamlensValueError(
                f"detection got boxes for {len(self.boxes)} images but the batch has {len(found)}"
            )
        result = []
        for index, (boxes, labels, _) in enumerate(found):
            refs = self.boxes[0 if len(self.boxes) == 1 else index].to(boxes.device, boxes.dtype)
            names = self.labels[0 if len(self.labels) == 1 else index].to(labels.device)
            picked = []
            if boxes.shape[0] == 0:
                result.append([-1] * refs.shape[0])
                continue
            overlaps = pairwise_iou(refs, boxes.detach())
            for row, label in zip(overlaps, names):
                row = torch.where((labels == label) & (row >= self.iou), row, -1.0)
                best = int(row.argmax())
                picked.append(best if row[best] >= 0 else -1)
            result.append(picked)
        return result

    def __call__(self, output: Any) -> torch.Tensor:
        found = detections_of(output)
        matches = self.matches(output)
        if self.strict and all(index < 0 for picked in matches for index in picked):
            raise CamlensValueError(
                f"no detection matches the reference boxes (same label, IoU >= {self.iou}) in "
                "any image; check the labels or lower iou"
            )
        totals = []
        for (_, _, scores), picked in zip(found, matches):
            chosen = [index for index in picked if index >= 0]
            totals.append(scores[chosen].sum() if chosen else scores.sum() * 0)
        return torch.stack(totals)

    def __repr__(self) -> str:
        count = sum(len(b) for b in self.boxes)
        return f"detection({count} boxes, iou={self.iou})"


def detection(boxes: Any, labels: Any, iou: float = 0.5) -> Detection:
    """Target a detector's matched detections: for each reference box (x0, y0, x1, y1) in input
    pixels, the detection with the same label and the highest IoU of at least ``iou``; the score
    is the sum of those detections' class scores (no IoU term: its gradient would explain the box
    geometry, not the class). ``boxes`` (N, 4) and ``labels`` (N,) apply to every image; a list of
    B such pairs gives each image its own."""
    return Detection(boxes, labels, iou)
