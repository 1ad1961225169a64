"""Several targets per image, and output values: planning ``target`` into one row per map.

An explainer given one of these targets runs the method once on a batch whose row m is a copy of
image ``owners[m]``, explaining that row's class (:func:`plan`):

- one list of classes per image, ``[[1, 5], [2]]``: those classes, in that order;
- ``"topK"``: each image's K best classes, best first (ranked by the activation's probabilities);
- ``"above:P"``: every class whose probability (the activation's) reaches P, best first; an image
  with no such class gives no map;
- ``"output:K"`` or ``("output", K)``: the K-th output value (:class:`OutputValue`), one map per
  image; its activation is "none" by default (no probability).

``activation``: "softmax" (the default for classes), "sigmoid" (multi-label models) or "none".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from camlens.errors import CamlensValueError, check_choice
from camlens.targets import (
    ACTIVATIONS,
    OutputValue,
    ResolvedTarget,
    Target,
    class_probabilities,
    resolve,
)

_WORDS = "pass 'topK', 'above:P' or 'output:K' (such as 'top3', 'above:0.5', 'output:0')"


def output_value(target: Any) -> OutputValue | None:
    """``("output", K)`` or ``"output:K"`` as an :class:`OutputValue` (None for other targets)."""
    if isinstance(target, OutputValue):
        return target
    if isinstance(target, tuple) and len(target) == 2 and target[0] == "output":
        return OutputValue(target[1])
    if isinstance(target, str) and target.startswith("output:"):
        if not re.fullmatch(r"output:\d+", target):
            raise CamlensValueError(f"unknown target {target!r}; {_WORDS}")
        return OutputValue(int(target.split(":")[1]))
    return None


def parse(text: str) -> tuple[str, float]:
    """A target word: ("top", K) or ("above", P); exact errors for the others."""
    top = re.fullmatch(r"top(\d+)", text)
    if top:
        count = int(top.group(1))
        if count < 1:
            raise CamlensValueError(
                f"target {text!r} asks for the {count} best classes; pass topK with K >= 1, such "
                "as 'top3'"
            )
        return "top", count
    above = re.fullmatch(r"above:(\d*\.?\d+(?:[eE][-+]?\d+)?)", text)
    if above:
        threshold = float(above.group(1))
        if not 0 <= threshold <= 1:
            raise CamlensValueError(
                f"target {text!r} has threshold {threshold:g}; pass above:P with P in [0, 1], "
                "such as 'above:0.5'"
            )
        return "above", threshold
    raise CamlensValueError(f"unknown target {text!r}; {_WORDS}")


def word(text: str) -> bool:
    """Whether ``text`` is meant as a target word ("top...", "above...", "output:...")."""
    return bool(re.match(r"(top\d|above|output:)", text))


def checked(text: str, outputs: int) -> str:
    """A target word checked against a model with ``outputs`` logits (K of "topK" and
    "output:K" in range); exact errors as the explainers give them."""
    value = output_value(text)
    if value is not None:
        value(torch.zeros(1, outputs))
        return text
    kind, number = parse(text)
    classes = 2 if outputs == 1 else outputs
    if kind == "top" and number > classes:
        raise CamlensValueError(
            f"target {text!r} asks for {int(number)} classes but the model has {classes}; pass "
            f"topK with K <= {classes}"
        )
    return text


def per_image(target: Any) -> bool:
    """Whether ``target`` is one list of classes per image (``[[1, 5], [2]]``)."""
    return (
        isinstance(target, (list, tuple))
        and bool(target)
        and all(isinstance(item, (list, tuple)) for item in target)
    )


def planned(target: Target, activation: str | None) -> bool:
    """Whether an explainer plans ``target`` (:func:`plan`) rather than resolving it as it is."""
    if activation is not None:
        check_choice(activation, ACTIVATIONS, "activation")
        return not callable(target) or isinstance(target, OutputValue)
    return isinstance(target, str) or per_image(target) or output_value(target) is not None


def _pairs(target: Any, logits: torch.Tensor, activation: str | None) -> list[tuple[int, int]]:
    """(image, class) pairs of a per-image list, "topK" or "above:P", image by image."""
    batch = logits.shape[0]
    if per_image(target):
        if len(target) != batch:
            raise CamlensValueError(
                f"target has {len(target)} lists of classes but the batch has {batch} images; "
                "pass one list per image"
            )
        return [(image, int(c)) for image, classes in enumerate(target) for c in classes]
    kind, value = parse(target)
    probs = class_probabilities(logits, activation)
    if kind == "top":
        if value > probs.shape[1]:
            raise CamlensValueError(
                f"target {target!r} asks for {int(value)} classes but the model has "
                f"{probs.shape[1]}; pass topK with K <= {probs.shape[1]}"
            )
        best = probs.topk(int(value), dim=1).indices
        return [(image, int(c)) for image in range(batch) for c in best[image]]
    if activation == "none":
        raise CamlensValueError(
            f"target {target!r} compares probabilities; pass activation='softmax' or 'sigmoid'"
        )
    order = probs.argsort(dim=1, descending=True, stable=True)
    return [(i, int(c)) for i in range(batch) for c in order[i] if probs[i, c] >= value]


def plan(
    target: Target, logits: torch.Tensor, activation: str | None = None
) -> tuple[torch.Tensor, ResolvedTarget]:
    """The rows of an explanation: ``owners`` int64 (M,) (the image each row copies) and the
    resolved target of those M rows, with ``activation`` for its probabilities."""
    batch = int(logits.shape[0])
    single = output_value(target)
    if single is not None or not (isinstance(target, str) or per_image(target)):
        resolved = resolve(single if single is not None else target, logits)
        if single is not None and activation is None:
            activation = "none"
        resolved.activation = activation
        return torch.arange(batch), resolved
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise CamlensValueError(
            f"target {target!r} picks classes from logits (B, classes), got an output of shape "
            f"{tuple(getattr(logits, 'shape', ()))}"
        )
    pairs = _pairs(target, logits, activation)
    owners = torch.tensor([image for image, _ in pairs], dtype=torch.int64)
    classes: Sequence[int] = [c for _, c in pairs]
    resolved = resolve(list(classes), logits[owners]) if pairs else ResolvedTarget(owners.clone())
    resolved.activation = activation
    return owners, resolved
