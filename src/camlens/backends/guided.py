"""Guided backpropagation for PyTorch models: a ReLU whose backward pass keeps positive gradients.

Springenberg et al. 2015 (arXiv:1412.6806), with :math:`R^{l}` the gradient reaching a ReLU's
output and :math:`f^{l}` its input:

.. math:: R^{l-1} = \\mathbb{1}[f^{l} > 0] \\cdot \\mathbb{1}[R^{l} > 0] \\cdot R^{l}

:func:`guided_relu` enters a :class:`torch.overrides.TorchFunctionMode` for the block. The mode
routes ``F.relu`` / ``F.relu_``, ``torch.relu`` / ``torch.relu_`` and ``Tensor.relu()`` /
``relu_()`` to the guided ReLU; ``nn.ReLU`` (in place or not) calls ``F.relu``, so modules,
functional and method calls are covered alike. Torch keeps the stack of function modes per thread,
so only the calling thread's ReLUs are guided: no function of torch is replaced (another thread's
model, explained at the same time, keeps its plain gradients), no module is touched, and the mode
is left at the end of the block, also after an exception. Swapping the model's ``nn.ReLU``
modules would miss functional calls, and replacing ``torch.relu`` for the call (as camlens once
did) reaches every thread. Not covered: compiled and scripted models, whose ReLUs run in their
graph.

``guided_relu("deconvolution")`` does the same with the deconvolution rule (Zeiler & Fergus 2014,
as Captum's ``Deconvolution``): :math:`R^{l-1} = \\mathbb{1}[R^{l} > 0] \\cdot R^{l}`, whatever
the forward input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from camlens.errors import CamlensValueError

#: The backward rules of :func:`guided_relu`.
RULES = ("guided", "deconvolution")


class _GuidedReLU(torch.autograd.Function):
    """relu forward; backward passes ``grad`` where both the input and ``grad`` are positive
    (``deconvolution``: where ``grad`` is positive)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, inplace: bool, deconvolution: bool) -> torch.Tensor:
        ctx.deconvolution = deconvolution
        positive = x > 0
        ctx.save_for_backward(positive)
        if inplace:
            ctx.mark_dirty(x)
            return x.clamp_(min=0)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        if ctx.deconvolution:
            return grad.clamp_min(0), None, None
        (positive,) = ctx.saved_tensors
        return grad.clamp_min(0) * positive, None, None


#: The ReLU entry points the mode sees, and whether each works in place (``F.relu``: its
#: ``inplace`` argument decides).
_RELUS: dict[Callable[..., Any], bool] = {
    F.relu: False,
    torch.relu: False,
    torch.relu_: True,
    torch.Tensor.relu: False,
    torch.Tensor.relu_: True,
}


class _GuidedMode(TorchFunctionMode):
    """Calls every ReLU that takes part in a gradient as :class:`_GuidedReLU`, the rest as is."""

    def __init__(self, deconvolution: bool = False) -> None:
        super().__init__()
        self.deconvolution = deconvolution

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        inplace = _RELUS.get(func)
        if inplace is not None:
            x = args[0]
            if torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.requires_grad:
                inplace = inplace or bool(kwargs.get("inplace", args[1] if len(args) > 1 else 0))
                return _GuidedReLU.apply(x, inplace, self.deconvolution)
        return func(*args, **kwargs)


@contextmanager
def guided_relu(rule: str = "guided") -> Iterator[None]:
    """Within the block, every ReLU of a PyTorch model run by this thread backpropagates guided
    gradients (``rule="deconvolution"``: deconvolution's); other threads are unaffected."""
    if rule not in RULES:
        raise CamlensValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    with _GuidedMode(deconvolution=rule == "deconvolution"):
        yield
