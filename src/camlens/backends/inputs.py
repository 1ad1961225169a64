"""Models with several inputs: ``model(*x)`` for a tuple or list, ``model(**x)`` for a dict.

:func:`as_inputs` wraps such an ``x`` in :class:`Inputs`, which names the explained image: the
first floating-point tensor of shape (B, C, H, W) or (B, C, T, H, W), or the one ``image=INDEX``
(a position, or a key of a dict) names. The other inputs (metadata, masks, text) are handed to the
model as they are, moved to its device.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from camlens.errors import CamlensTypeError, CamlensValueError, describe


@dataclass(frozen=True)
class Inputs:
    """The inputs of one model call and which of them is the explained image."""

    values: tuple[Any, ...] | dict[str, Any]
    key: int | str

    @property
    def image(self) -> torch.Tensor:
        """The explained image batch."""
        return self.values[self.key]  # type: ignore[index]  # key: a tuple's int, a dict's name

    @property
    def shape(self) -> torch.Size:
        return self.image.shape

    @property
    def ndim(self) -> int:
        return self.image.ndim

    def replace(self, image: torch.Tensor, device: torch.device | None = None) -> Inputs:
        """The same inputs with ``image`` in place of the explained one (the others moved to
        ``device``)."""

        def move(value: Any) -> Any:
            if device is not None and isinstance(value, torch.Tensor):
                return value.to(device)
            return value

        if isinstance(self.values, dict):
            values: Any = {k: move(v) for k, v in self.values.items()}
        else:
            values = [move(v) for v in self.values]
        values[self.key] = image
        return Inputs(values if isinstance(values, dict) else tuple(values), self.key)

    def __getitem__(self, rows: slice) -> Inputs:
        """Rows of the batch: every tensor with the image's batch size is sliced."""
        batch = self.image.shape[0]

        def cut(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch:
                return value[rows]
            return value

        if isinstance(self.values, dict):
            return Inputs({k: cut(v) for k, v in self.values.items()}, self.key)
        return Inputs(tuple(cut(v) for v in self.values), self.key)

    def call(self, model: Any) -> Any:
        """``model(*values)`` or ``model(**values)``."""
        if isinstance(self.values, dict):
            return model(**self.values)
        return model(*self.values)


def _is_image(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point() and value.ndim in (4, 5)


#: The start of the message refusing what is not a preprocessed batch.
EXPECTED = "x must be a preprocessed tensor of shape (B, C, H, W)"


def _is_file(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


def _is_picture(value: Any) -> bool:
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(value, pil.Image)


def load_hint(x: Any) -> str:
    """How to turn file names or pictures ``x`` into a batch: the ``load_images`` call."""
    items = list(x) if isinstance(x, (list, tuple)) else [x]
    if all(_is_file(item) for item in items):
        names = [os.fsdecode(item) for item in items]
        shown = repr(names) if len(names) <= 3 else "paths"
        return f"x, images = camlens.load_images({shown})"
    return "x, images = camlens.load_images([image])"


def check_tensor(x: Any) -> None:
    """Raise unless ``x`` is a float (B, C, H, W) or (B, C, T, H, W) tensor, saying what to pass."""
    if not isinstance(x, torch.Tensor):
        hint = "torch.as_tensor(x) if it is one already, or " if hasattr(x, "shape") else ""
        raise CamlensTypeError(
            f"{EXPECTED}, got {describe(x)}; pass {hint}load and preprocess pictures first: "
            + load_hint(x)
        )
    if x.ndim not in (4, 5):
        hint = "; add a batch dimension with x[None]" if x.ndim == 3 else ""
        raise CamlensValueError(
            "expected x of shape (B, C, H, W), or (B, C, T, H, W) for clips and volumes, got "
            f"{tuple(x.shape)}{hint}"
        )
    if not x.is_floating_point():
        raise CamlensTypeError(
            f"expected x as a float tensor, got dtype {x.dtype}; scale images to floats "
            "(camlens.load_images does)"
        )


def refuse_files(x: Any) -> None:
    """Raise a CamlensTypeError for file names or pictures (one, or a list of them) where a
    preprocessed batch is expected, saying how to load them."""
    items = list(x) if isinstance(x, (list, tuple)) else [x]
    if not items or not all(_is_file(item) or _is_picture(item) for item in items):
        return
    if _is_file(items[0]):
        what = "a file name" if len(items) == 1 else "file names"
        shown = ", ".join(repr(os.fsdecode(item)) for item in items[:3])
        shown += ", ..." if len(items) > 3 else ""
    else:
        what, shown = ("a PIL image" if len(items) == 1 else "PIL images"), ""
    raise CamlensTypeError(
        f"{EXPECTED}, got {what}{' ' + shown if shown else ''}; load and preprocess first: "
        + load_hint(x)
    )


def check_batch(x: Any, canonical: torch.Tensor, dtype: Any = None) -> None:
    """Refuse an empty batch and NaN or inf values; ``canonical`` is ``x``'s image as the
    adapter hands it to the model (float32 (B, C, H, W), values cast to the model's ``dtype``)."""
    image = x.image if isinstance(x, Inputs) else x
    if canonical.shape[0] == 0:
        raise CamlensValueError(
            f"x is an empty batch (0 images) of shape {tuple(image.shape)}; pass at least one image"
        )
    bad = ~torch.isfinite(canonical)
    if not bad.any():
        return
    count = int(bad.sum())
    rows = bad.flatten(1).any(dim=1).nonzero()[:, 0].tolist()
    fix = (
        "fix how the images were loaded and normalised (a division by a zero std, a log of 0) "
        "or leave those images out"
    )
    if isinstance(image, torch.Tensor) and torch.isfinite(image).all():  # overflowed in the cast
        fix = (
            f"they overflow the model's {str(dtype).replace('torch.', '')}: scale x down "
            "or run the model in float32 (model.float())"
        )
    raise CamlensValueError(
        f"x holds NaN or inf values ({images_text(rows)}): {count} of {canonical.numel()} "
        f"values; {fix}"
    )


def images_text(rows: Sequence[int]) -> str:
    """The images named: "image 1" or "images 1, 3, 4" (the first ten)."""
    shown = ", ".join(str(row) for row in rows[:10]) + (", ..." if len(rows) > 10 else "")
    return f"image{'s' if len(rows) > 1 else ''} {shown}"


def as_inputs(x: Any, image: int | str | None = None) -> Any:
    """``x`` as it is for one tensor (or anything not a tuple, list or dict), else :class:`Inputs`
    with the explained image found (``image`` names it). File names and pictures are refused
    (:func:`refuse_files`)."""
    refuse_files(x)
    if not isinstance(x, (Sequence, Mapping)) or isinstance(x, (str, bytes, torch.Tensor)):
        if image is not None:
            raise CamlensValueError(
                f"image={image!r} names one of several inputs, but x is {describe(x)}; pass x as "
                "a tuple or dict of inputs"
            )
        return x
    if isinstance(x, Inputs):
        return x
    values: tuple[Any, ...] | dict[str, Any]
    if isinstance(x, Mapping):
        values = dict(x)
        keys: list[Any] = list(values)
    else:
        values = tuple(x)
        keys = list(range(len(values)))
    if not keys:
        raise CamlensValueError("x is an empty sequence of inputs; pass at least the image")
    if image is None:
        found = [key for key in keys if _is_image(values[key])]
        if not found:
            shown = ", ".join(describe(values[key]) for key in keys)
            raise CamlensValueError(
                "x holds no image: expected a float tensor of shape (B, C, H, W) or "
                f"(B, C, T, H, W) among the inputs, got {shown}"
            )
        return Inputs(values, found[0])
    if image not in keys:
        raise CamlensValueError(f"image={image!r} is not one of the inputs; expected one of {keys}")
    inputs = Inputs(values, image)
    if not isinstance(inputs.image, torch.Tensor):
        raise CamlensTypeError(f"image={image!r} names {describe(inputs.image)}, not a tensor")
    return inputs
