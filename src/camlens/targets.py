"""Which score is explained: resolving ``target`` against a batch of logits.

``target`` is ``None`` (the predicted class), an ``int`` (that class for every image), a sequence
of B ints, or a callable ``logits -> (B,) scores``. A one-logit (binary) head explains class 1 as
the logit and class 0 as its negative, so that ``sigmoid(score)`` is that class's probability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from camlens.errors import CamlensTypeError, CamlensValueError, describe

Target = int | Sequence[int] | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None


@dataclass
class ResolvedTarget:
    """Targets (B,) int64 (-1 for a callable) and the callable, if one was given."""

    indices: torch.Tensor
    function: Callable[[torch.Tensor], torch.Tensor] | None = None


def resolve(target: Target, logits: torch.Tensor) -> ResolvedTarget:
    """Turn ``target`` into per-image class indices for ``logits`` of shape (B, K)."""
    batch = logits.shape[0]
    if callable(target) and not isinstance(target, torch.Tensor):
        return ResolvedTarget(torch.full((batch,), -1, dtype=torch.int64), target)
    if logits.ndim != 2:
        raise CamlensValueError(
            f"the model's output has shape {tuple(logits.shape)}, not (B, classes); pass "
            "target=callable mapping the output to (B,) scores"
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


def scores(logits: torch.Tensor, target: ResolvedTarget) -> torch.Tensor:
    """The explained score of each image, differentiable, shape (B,)."""
    if target.function is not None:
        values = target.function(logits)
        if not isinstance(values, torch.Tensor) or values.shape != (logits.shape[0],):
            raise CamlensValueError(
                "a callable target must return a tensor of shape (B,) = "
                f"({logits.shape[0]},), got {describe(values)}"
            )
        return values
    indices = target.indices.to(logits.device)
    if logits.shape[1] == 1:
        sign = indices.to(logits.dtype) * 2 - 1
        return logits[:, 0] * sign
    return logits.gather(1, indices[:, None])[:, 0]


def probabilities(logits: torch.Tensor, target: ResolvedTarget) -> torch.Tensor:
    """Softmax probability of each image's target (sigmoid for one logit), float32 (B,), CPU."""
    logits = logits.detach().float()
    if target.function is not None:
        return torch.full((logits.shape[0],), float("nan"))
    indices = target.indices.to(logits.device)
    if logits.shape[1] == 1:
        return torch.sigmoid(scores(logits, target)).cpu()
    return logits.softmax(dim=1).gather(1, indices[:, None])[:, 0].cpu()
