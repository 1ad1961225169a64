"""One forward pass of a PyTorch model, read for what the methods need: the logits in its output
(a final ``Softmax``'s input where it ends in one) and the linear head that made them (for CAM).

The adapter (:mod:`camlens.backends.torch`) runs the pass; these functions watch it with hooks
that live for that one call and read the result.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn

from camlens.backends.base import Head
from camlens.backends.torch_hooks import hooked
from camlens.errors import CamlensTypeError, describe

#: (module, its first input, its output) for each watched call, in call order.
Seen = list[tuple[nn.Module, torch.Tensor, torch.Tensor]]


def logits_of(output: Any) -> torch.Tensor:
    """The score tensor in a model's output: a tensor, the first item of a tuple, a dict's
    ``logits`` (or ``out``), or an object's ``.logits`` (HuggingFace); (B,) becomes (B, 1)."""
    value = output
    if isinstance(value, dict):
        for key in ("logits", "out"):
            if key in value:
                value = value[key]
                break
        else:
            if len(value) == 1:
                value = next(iter(value.values()))
    elif not isinstance(value, torch.Tensor) and hasattr(value, "logits"):
        value = value.logits
    if isinstance(value, (tuple, list)) and value:
        return logits_of(value[0])
    if not isinstance(value, torch.Tensor):
        detector = isinstance(value, dict) and "boxes" in value
        raise CamlensTypeError(
            "the model must return logits as a tensor, a tuple, a dict with 'logits' or an object "
            f"with .logits, got {describe(output)}"
            + (
                "; for a detector pass target=camlens.targets.detection(boxes, labels)"
                if detector
                else ""
            )
        )
    return value[:, None] if value.ndim == 1 else value


@contextmanager
def watching(model: nn.Module, linear: bool) -> Iterator[Seen]:
    """Within the block, the calls of ``model``'s Softmax and LogSoftmax modules (and, with
    ``linear``, its Linear modules) are recorded in the list it yields."""
    seen: Seen = []

    def watch(module: nn.Module, args: object, output: object) -> None:
        first = args[0] if isinstance(args, tuple) and args else None
        if isinstance(first, torch.Tensor) and isinstance(output, torch.Tensor):
            seen.append((module, first, output))

    watched = [
        (module, watch)
        for module in model.modules()
        if isinstance(module, (nn.Softmax, nn.LogSoftmax))
        or (linear and isinstance(module, nn.Linear))
    ]
    with hooked(watched):
        yield seen


def before_softmax(logits: torch.Tensor, seen: Seen) -> tuple[torch.Tensor, nn.Module | None]:
    """The input of the final Softmax/LogSoftmax that returned ``logits`` (when it is (B, K)),
    and that module; ``logits`` and None when no such module made them."""
    for module, inputs, output in reversed(seen):
        if isinstance(module, (nn.Softmax, nn.LogSoftmax)) and output.data_ptr() == (
            logits.data_ptr()
        ):
            return (inputs if inputs.ndim == 2 else logits), module
    return logits, None


def linear_head(logits: torch.Tensor, seen: Seen) -> tuple[nn.Module, torch.Tensor] | None:
    """The last Linear module and its input, if its output is ``logits`` (NaN logits too)."""
    for module, inputs, output in reversed(seen):
        if isinstance(module, nn.Linear) and output.shape == logits.shape:
            if torch.allclose(output.detach(), logits.detach(), 0, 0, equal_nan=True):
                return module, inputs
            break
    return None


def head_record(linear: tuple[nn.Module, torch.Tensor] | None) -> Head | None:
    """The float32 :class:`Head` (weight, bias, flattened features) of a linear head."""
    if linear is None:
        return None
    module, features = linear
    assert isinstance(module, nn.Linear)
    bias = module.bias if module.bias is not None else torch.zeros(module.out_features)
    return Head(
        module.weight.detach().float(),
        bias.detach().float().to(module.weight.device),
        features.detach().float().reshape(features.shape[0], -1),
    )


def floats(logits: Any) -> Any:
    """Float32 logits; a whole output (a detector's list of dicts) as it is."""
    return logits.float() if isinstance(logits, torch.Tensor) else logits


def detached(logits: Any) -> Any:
    """Float32 detached logits; a whole output read by an :class:`~camlens.targets.OutputTarget`
    (a detector's list of dicts, a dict) with its tensors detached."""
    if isinstance(logits, torch.Tensor):
        return logits.detach().float()
    if isinstance(logits, dict):
        return {key: detached(value) for key, value in logits.items()}
    if isinstance(logits, (list, tuple)):
        return type(logits)(detached(value) for value in logits)
    return logits
