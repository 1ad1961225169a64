"""Guided backpropagation for PyTorch models: a ReLU whose backward pass keeps positive gradients.

Springenberg et al. 2015 (arXiv:1412.6806), with :math:`R^{l}` the gradient reaching a ReLU's
output and :math:`f^{l}` its input:

.. math:: R^{l-1} = \\mathbb{1}[f^{l} > 0] \\cdot \\mathbb{1}[R^{l} > 0] \\cdot R^{l}

:func:`guided_relu` swaps ``torch.nn.functional.relu`` / ``relu_`` and ``torch.relu`` / ``relu_``
for the call's duration. ``nn.ReLU`` (in place or not) calls ``F.relu``, so modules and functional
calls are covered alike; no module is touched, and the originals come back in ``finally``, also
after an exception. Not covered: ``Tensor.relu()`` method calls and compiled/scripted models.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

_LOCK = threading.RLock()


class _GuidedReLU(torch.autograd.Function):
    """relu forward; backward passes ``grad`` where both the input and ``grad`` are positive."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, inplace: bool) -> torch.Tensor:
        positive = x > 0
        ctx.save_for_backward(positive)
        if inplace:
            ctx.mark_dirty(x)
            return x.clamp_(min=0)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (positive,) = ctx.saved_tensors
        return grad.clamp_min(0) * positive, None


def _relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    if not torch.is_grad_enabled() or not x.requires_grad:
        return _ORIGINAL["relu_"](x) if inplace else _ORIGINAL["relu"](x)
    return _GuidedReLU.apply(x, inplace)


def _relu_(x: torch.Tensor) -> torch.Tensor:
    return _relu(x, inplace=True)


def _functional_relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return _relu(x, inplace)


_ORIGINAL: dict[str, Any] = {"relu": torch.relu, "relu_": torch.relu_}
_PATCHES: tuple[tuple[Any, str, Any], ...] = (
    (F, "relu", _functional_relu),
    (F, "relu_", _relu_),
    (torch, "relu", _relu),
    (torch, "relu_", _relu_),
)


@contextmanager
def guided_relu() -> Iterator[None]:
    """Within the block every ReLU of a PyTorch model backpropagates guided gradients."""
    with _LOCK:
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in _PATCHES]
        try:
            for owner, name, patch in _PATCHES:
                setattr(owner, name, patch)
            yield
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)
