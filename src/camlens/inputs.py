"""Models with several inputs: ``model(*x)`` for a tuple or list, ``model(**x)`` for a dict.

:func:`as_inputs` wraps such an ``x`` in :class:`Inputs`, which names the explained image: the
first floating-point tensor of shape (B, C, H, W) or (B, C, T, H, W), or the one ``image=INDEX``
(a position, or a key of a dict) names. The other inputs (metadata, masks, text) are handed to the
model as they are, moved to its device.
"""

from __future__ import annotations

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
        return self.values[self.key]  # type: ignore[index]

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


def as_inputs(x: Any, image: int | str | None = None) -> Any:
    """``x`` as it is for one tensor (or anything not a tuple, list or dict), else :class:`Inputs`
    with the explained image found (``image`` names it)."""
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
        found = [key for key in keys if _is_image(values[key])]  # type: ignore[index]
        if not found:
            shown = ", ".join(describe(values[key]) for key in keys)  # type: ignore[index]
            raise CamlensValueError(
                "x holds no image: expected a float tensor of shape (B, C, H, W) or "
                f"(B, C, T, H, W) among the inputs, got {shown}"
            )
        return Inputs(values, found[0])
    if image not in keys:
        raise CamlensValueError(f"image={image!r} is not one of the inputs; expected one of {keys}")
    if not isinstance(values[image], torch.Tensor):  # type: ignore[index]
        raise CamlensTypeError(
            f"image={image!r} names {describe(values[image])}, not a tensor"  # type: ignore[index]
        )
    return Inputs(values, image)
