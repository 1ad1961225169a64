"""Faithfulness: does the model's confidence follow the map?

Deletion and insertion (Petsiuk et al. 2018, RISE), Average Drop and Increase in Confidence
(Chattopadhay et al. 2018, Grad-CAM++). Every function takes the model, a canonical input batch
(B, C, H, W), maps (B, H, W) or an :class:`~camlens.Explanation`, and the targets, and returns
per-image float32 tensors on the CPU. Perturbed images are built on the model's device and run
as batched forwards of ``batch_size`` images through the model's adapter.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from camlens import targets as targets_
from camlens.backends import adapter_for
from camlens.backends.quantize import calibration_rows
from camlens.errors import CamlensTypeError, CamlensValueError, check_choice, describe
from camlens.explanation import Explanation

BASELINES = ("zero", "blur", "mean")
PRECISIONS = ("fp32", "bf16", "int8")
BLUR_SIZE = 11
BLUR_SIGMA = 5.0


@dataclass
class Batch:
    """What every metric starts from: the adapter, the canonical input, the maps on the model's
    device, the resolved targets and the explained probability of the intact images."""

    adapter: Any
    x: torch.Tensor
    maps: torch.Tensor
    target: targets_.ResolvedTarget
    probs: torch.Tensor
    batch_size: int

    def run(self, build, count: int, precision: str = "fp32") -> torch.Tensor:
        """Evaluate ``count`` perturbed images made in chunks by ``build(start, stop)``, which
        returns the images and the index of the image each one perturbs. ``precision="int8"``
        runs them through an int8 copy of the model calibrated on 32 of them, spread evenly."""
        values = []
        quantized = nullcontext()
        if precision == "int8" and count:
            with torch.inference_mode():
                rows = [build(int(i), int(i) + 1)[0] for i in calibration_rows(count)]
            quantized = self.adapter.int8(torch.cat(rows))
        with quantized, torch.inference_mode():
            for start in range(0, count, self.batch_size):
                images, owners = build(start, min(count, start + self.batch_size))
                logits = self.adapter.infer(images, precision=precision)  # channels-last
                values.append(probabilities(logits, self.target, owners))
        return torch.cat(values) if values else torch.zeros(0)


def check_precision(precision: Any) -> str:
    """``precision`` of the perturbed forwards: "fp32" (exact), "bf16" or "int8" (approximate)."""
    check_choice(precision, PRECISIONS, "precision")
    return precision


def probabilities(
    logits: torch.Tensor, target: targets_.ResolvedTarget, owners: torch.Tensor
) -> torch.Tensor:
    """The explained probability of each row of ``logits``, row n explaining ``owners[n]``:
    softmax (sigmoid for a one-logit head, the callable's score for a callable target), float32
    on the CPU."""
    function = target.rows(owners).function
    if function is not None:
        return function(logits).float().cpu()
    indices = target.indices.to(logits.device)[owners.to(logits.device)]
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0] * (indices.float() * 2 - 1)).cpu()
    return logits.softmax(dim=1).gather(1, indices[:, None])[:, 0].cpu()


def prepare(
    model: Any, x: Any, maps: Any, target: targets_.Target = None, batch_size: int = 32
) -> Batch:
    """Check the arguments and resolve the targets (an Explanation's own targets when ``target``
    is None) against the intact images' logits."""
    adapter = adapter_for(model)
    tensor = adapter.as_tensor(x)
    if isinstance(maps, Explanation):
        if target is None and bool((maps.targets >= 0).all()):
            target = maps.targets
        maps = maps.maps
    maps = check_maps(maps, tensor)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise CamlensValueError(f"batch_size must be a positive int, got {batch_size!r}")
    with torch.inference_mode():
        logits = adapter.logits(tensor)
    resolved = targets_.resolve(target, logits)
    probs = probabilities(logits, resolved, torch.arange(tensor.shape[0]))
    return Batch(adapter, tensor, maps.to(tensor.device), resolved, probs, batch_size)


def check_maps(maps: Any, x: torch.Tensor) -> torch.Tensor:
    """``maps`` as float32 (B, H, W) matching the batch ``x`` (B, C, H, W)."""
    if not isinstance(maps, torch.Tensor):
        raise CamlensTypeError(
            f"maps must be a torch.Tensor of shape (B, H, W) or an Explanation, got "
            f"{describe(maps)}"
        )
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    expected = (x.shape[0], x.shape[2], x.shape[3])
    if tuple(maps.shape) != expected:
        raise CamlensValueError(
            f"expected maps of shape (B, H, W) = {expected} to match x of shape "
            f"{tuple(x.shape)}, got {tuple(maps.shape)}; upsample the maps to the input size "
            "(Explanation.maps already are)"
        )
    return maps.detach().float()


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """Rank of each pixel (0 = most relevant), by decreasing map value, ties by pixel index."""
    flat = maps.reshape(maps.shape[0], -1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    ranks.scatter_(1, order, positions)
    return ranks.reshape(maps.shape)


def gaussian_blur(
    x: torch.Tensor, size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA
) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with a normalised ``size``-tap kernel of
    ``sigma``, reflect padding (zero padding when the image is smaller than the kernel)."""
    radius = size // 2
    taps = torch.arange(size, device=x.device, dtype=torch.float32) - radius
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) > radius else "constant"
    out = F.pad(x.float(), (radius, radius, 0, 0), mode=mode)
    out = F.conv2d(out, kernel.view(1, 1, 1, size).repeat(channels, 1, 1, 1), groups=channels)
    out = F.pad(out, (0, 0, radius, radius), mode=mode)
    return F.conv2d(out, kernel.view(1, 1, size, 1).repeat(channels, 1, 1, 1), groups=channels)


def baseline_image(x: torch.Tensor, baseline: Any) -> torch.Tensor:
    """The image removed pixels are replaced with: "zero", "blur" (Gaussian, 11 taps, sigma 5),
    "mean" (the batch's per-channel mean), or a tensor broadcastable to ``x``."""
    if isinstance(baseline, torch.Tensor):
        value = baseline.to(device=x.device, dtype=torch.float32)
        if value.ndim == 1:
            value = value[:, None, None]
        try:
            return torch.broadcast_to(value, x.shape).clone()
        except RuntimeError as error:
            raise CamlensValueError(
                f"a baseline tensor must broadcast to x of shape {tuple(x.shape)} (per channel: "
                f"({x.shape[1]},)), got {tuple(baseline.shape)}"
            ) from error
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "blur":
        return gaussian_blur(x)
    if baseline == "mean":
        return x.mean(dim=(0, 2, 3), keepdim=True).expand_as(x).clone()
    raise CamlensValueError(
        f"baseline must be one of {', '.join(BASELINES)} or a tensor, got {baseline!r}"
    )


def chunk_counts(pixels: int, steps: int) -> torch.Tensor:
    """Pixels changed after each step k = 0..steps: ``floor(k * pixels / steps)``."""
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= pixels:
        raise CamlensValueError(
            f"steps must be an int between 1 and the number of pixels ({pixels}), got {steps!r}"
        )
    return torch.arange(steps + 1, dtype=torch.int64) * pixels // steps


def auc(curves: torch.Tensor) -> torch.Tensor:
    r"""Area under curves (B, S + 1) sampled at x = k / S: the trapezoid rule divided by S.

    .. math:: \mathrm{AUC} = \frac{1}{S}\Big(\sum_{k=0}^{S} p_k - \frac{p_0 + p_S}{2}\Big)
    """
    steps = curves.shape[1] - 1
    return (curves.sum(dim=1) - (curves[:, 0] + curves[:, -1]) / 2) / steps


def _pixel_curve(
    model: Any,
    x: Any,
    maps: Any,
    target: targets_.Target,
    steps: int,
    start: Any,
    end: Any,
    batch_size: int,
    precision: str,
) -> torch.Tensor:
    """Curves (B, steps + 1): step k shows ``end`` at the k-th chunk of most relevant pixels and
    ``start`` elsewhere; "x" stands for the intact image."""
    check_precision(precision)
    batch = prepare(model, x, maps, target, batch_size)
    images = batch.x
    first = images if isinstance(start, str) and start == "x" else baseline_image(images, start)
    last = images if isinstance(end, str) and end == "x" else baseline_image(images, end)
    ranks = pixel_ranks(batch.maps)
    height, width = ranks.shape[1:]
    counts = chunk_counts(height * width, steps).to(images.device)
    total = images.shape[0] * (steps + 1)

    def build(begin: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = torch.arange(begin, stop, device=images.device)
        owners, step = pairs // (steps + 1), pairs % (steps + 1)
        changed = (ranks[owners] < counts[step][:, None, None])[:, None]
        return torch.where(changed, last[owners], first[owners]), owners

    return batch.run(build, total, precision).reshape(images.shape[0], steps + 1)


def deletion(
    model: Any,
    x: Any,
    maps: Any,
    target: targets_.Target = None,
    steps: int = 50,
    baseline: Any = "zero",
    batch_size: int = 32,
    return_curves: bool = False,
    precision: str = "fp32",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Deletion AUC (Petsiuk et al. 2018, RISE, arXiv:1806.07421); lower is more faithful.

    Pixels are ranked by decreasing map value (ties by pixel index) and replaced by the baseline
    in ``steps`` chunks: after step k the first :math:`\lfloor kN/S \rfloor` of the N pixels are
    removed. :math:`p_k` is the softmax probability of the explained class after step k
    (:math:`p_0`: the intact image, :math:`p_S`: the baseline), and

    .. math:: \mathrm{AUC} = \frac{1}{S}\sum_{k=1}^{S}\frac{p_{k-1} + p_k}{2}

    ``baseline``: "zero", "blur" (Gaussian, 11 taps, sigma 5) or "mean" (the batch's per-channel
    mean), or a tensor broadcastable to x. Returns AUCs (B,), and the curves (B, S + 1) too with
    ``return_curves``. ``precision``: "fp32" (exact, the default), "bf16" (autocast) or "int8"
    (an int8 copy of a PyTorch model on the CPU, calibrated on 32 of the perturbed images: about
    5x faster on CPUs with VNNI, approximate; docs/metrics.md gives the error measured).
    """
    curves = _pixel_curve(model, x, maps, target, steps, "x", baseline, batch_size, precision)
    return (auc(curves), curves) if return_curves else auc(curves)


def insertion(
    model: Any,
    x: Any,
    maps: Any,
    target: targets_.Target = None,
    steps: int = 50,
    baseline: Any = "blur",
    batch_size: int = 32,
    return_curves: bool = False,
    precision: str = "fp32",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Insertion AUC (Petsiuk et al. 2018, RISE, arXiv:1806.07421); higher is more faithful.

    Starts from the baseline (a blurred copy by default, as in RISE) and inserts the original
    pixels by decreasing map value (ties by pixel index) in ``steps`` chunks; the curve
    :math:`p_k` (step 0: the baseline, step S: the intact image) and the AUC are as in
    :func:`deletion`. Returns AUCs (B,), and the curves (B, S + 1) with ``return_curves``;
    ``precision`` as in :func:`deletion`.
    """
    curves = _pixel_curve(model, x, maps, target, steps, baseline, "x", batch_size, precision)
    return (auc(curves), curves) if return_curves else auc(curves)


def _masked(model: Any, x: Any, maps: Any, target: targets_.Target, batch_size: int):
    batch = prepare(model, x, maps, target, batch_size)
    masked = batch.x * batch.maps.clamp(0, 1)[:, None]

    def build(begin: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        return masked[begin:stop], torch.arange(begin, stop)

    return batch.probs, batch.run(build, masked.shape[0])


def average_drop(
    model: Any,
    x: Any,
    maps: Any,
    target: targets_.Target = None,
    batch_size: int = 32,
) -> torch.Tensor:
    r"""Per-image drop in confidence when the image is multiplied by its map (Chattopadhay et al.
    2018, Grad-CAM++, arXiv:1710.11063); its mean over images is the Average Drop (lower is
    better).

    .. math:: \mathrm{drop}_i = \frac{\max(0,\, y_i - o_i)}{y_i}, \qquad o_i = y(x_i \odot M_i)

    with :math:`y` the softmax probability of the explained class and :math:`M_i \in [0, 1]`.
    """
    probs, masked = _masked(model, x, maps, target, batch_size)
    return (probs - masked).clamp_min(0) / probs


def increase_in_confidence(
    model: Any,
    x: Any,
    maps: Any,
    target: targets_.Target = None,
    batch_size: int = 32,
) -> torch.Tensor:
    r"""Per-image indicator :math:`[\,y(x_i \odot M_i) > y(x_i)\,]` as float (Chattopadhay et al.
    2018, Grad-CAM++); its mean over images is the Increase in Confidence (higher is better)."""
    probs, masked = _masked(model, x, maps, target, batch_size)
    return (masked > probs).float()
