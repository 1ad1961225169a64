"""Reduced precision for the methods' own passes (``precision=`` of every method).

``precision="bf16"`` runs a method's forward and backward passes of a float32 PyTorch model under
bfloat16 autocast; the maps are combined and returned in float32. ``precision="auto"`` may pick
bf16 only after :func:`probe`: one pass in each precision, once per model, method, device and
input shape (cached in :data:`PROBES`), bf16 kept where it was faster and its maps agree with
float32's within :data:`AGREEMENT`.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import Any

import torch

from camlens.maps import minmax

log = logging.getLogger("camlens")

#: ``precision`` values every method takes ("int8" concerns the many-forward methods only).
PRECISIONS = ("auto", "fp32", "bf16", "int8")
#: The names of a half-precision model's own dtype, recorded as the precision it ran in.
DTYPES = {torch.bfloat16: "bf16", torch.float16: "fp16"}
#: ``precision="auto"``'s probes: model -> {(method, device, input shape): "bf16" or "fp32"}.
PROBES: weakref.WeakKeyDictionary[Any, dict[tuple, str]] = weakref.WeakKeyDictionary()
#: The agreement bf16 maps must keep with float32's: (least correlation, largest difference).
AGREEMENT = (0.99, 0.05)


def agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(correlation, largest difference) of two batches of maps; two equal constant batches
    correlate 1, unequal ones 0."""
    a, b = a.flatten().double(), b.flatten().double()
    worst = float((a - b).abs().max()) if a.numel() else 0.0
    if a.numel() < 2 or not (a.std() > 0 and b.std() > 0):
        return float(worst == 0), worst
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1]), worst


def step_in(explainer: Any, x: Any, target: Any, precision: str) -> Any:
    """``explainer._step(x, target)`` in ``precision``: "bf16" under bfloat16 autocast on the
    model's device (forward and backward), else as it is."""
    if precision != "bf16":
        return explainer._step(x, target)
    with torch.autocast(explainer.adapter.device.type, dtype=torch.bfloat16):
        return explainer._step(x, target)


def probe(explainer: Any, x: Any, target: Any) -> tuple[str, Any]:
    """``auto``'s choice for this batch and the step in it: "bf16" if its pass was faster than
    float32's and its rectified, min-max scaled raw maps agree within :data:`AGREEMENT`."""
    steps, seconds = {}, {}
    for precision in ("fp32", "bf16"):
        start = time.perf_counter()
        steps[precision] = step_in(explainer, x, target, precision)
        seconds[precision] = time.perf_counter() - start
    exact, rounded = (minmax(steps[p].raw.float().clamp_min(0)) for p in steps)
    correlation, worst = agreement(exact, rounded)
    chosen = "fp32"
    if correlation >= AGREEMENT[0] and worst <= AGREEMENT[1]:
        chosen = "bf16" if seconds["bf16"] < seconds["fp32"] else "fp32"
    log.info(
        "precision='auto' probe of %s: bf16 %.3f s, fp32 %.3f s, correlation %.4f, max "
        "difference %.4f: %s",
        explainer.name, seconds["bf16"], seconds["fp32"], correlation, worst, chosen,
    )  # fmt: skip
    return chosen, steps[chosen]
