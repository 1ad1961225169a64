"""Occlusion (Zeiler & Fergus 2014): the drop of the target's score when a window of the input is
replaced by a baseline, as Captum's ``Occlusion`` computes it, the forwards batched."""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from camlens import targets as targets_
from camlens.errors import CamlensTypeError, CamlensValueError
from camlens.methods._registry import register
from camlens.methods.base import Step, auto_batch
from camlens.methods.perturbation import _Progress, _row_target, check_precision, resolved_precision
from camlens.methods.pixel import PixelMethod, check_baseline
from camlens.targets import Target


def _sizes(value: Any, dims: int, what: str) -> tuple[int, ...]:
    """An int or a tuple of ``dims`` positive ints as a tuple of ``dims`` ints."""
    sizes = (value,) * dims if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(sizes, tuple)
        or len(sizes) != dims
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes)
    ):
        raise CamlensValueError(
            f"{what} must be a positive int or a tuple of {dims} positive ints, got {value!r}"
        )
    return sizes


def windows(shape: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...]) -> list:
    """The occluded windows, one tuple of slices per position: ``ceil((n - w) / s) + 1`` starts
    ``k s`` per dimension (as Captum's), the last window cut at the border; ``w`` is clipped to
    the input's size ``n``."""
    axes = []
    for n, w, s in zip(shape, window, stride):
        w = min(w, n)
        axes.append([slice(k * s, min(k * s + w, n)) for k in range(math.ceil((n - w) / s) + 1)])
    return list(itertools.product(*axes))


@register("occlusion")
class Occlusion(PixelMethod):
    r"""Occlusion (Zeiler & Fergus 2014, arXiv:1311.2901), as Captum's ``Occlusion`` computes it.

    Every window :math:`W` (all channels, ``window`` pixels, moved by ``stride``) is replaced by
    the ``baseline`` :math:`b`; each pixel gets the mean score drop of the windows covering it:

    .. math:: a_{ij} = \frac{\sum_{W \ni ij} \big(y^c(x) - y^c(x_{W \leftarrow b})\big)}
       {|\{W \ni ij\}|}

    ``window``: an int or one per spatial dimension (clipped to the input; Captum's
    ``sliding_window_shapes=(C, w, w)``), by default :math:`\min(16, \lfloor n/4 \rfloor)` per
    dimension of size n (16 windows at 64 px); ``stride`` (Captum's ``strides``) by default the
    window (no overlap); ``baseline`` 0, a
    number or a tensor broadcastable to the canonical batch. The occluded copies run in inference
    mode, ``batch_size`` at a time; ``precision`` "auto", "fp32" or "bf16" as Score-CAM's.
    ``exp.raw`` is :math:`a` (signed: positive where occluding lowers the score);
    ``exp.extra["attribution"]`` repeats it over the channels, as Captum's.
    """

    paper = "Zeiler & Fergus 2014, Visualizing and Understanding CNNs (arXiv:1311.2901)"
    several_inputs = False
    smoothable = False

    def __init__(
        self,
        model: Any,
        layer: Any = "auto",
        *,
        window: int | tuple[int, ...] | None = None,
        stride: int | tuple[int, ...] | None = None,
        baseline: float | torch.Tensor = 0.0,
        precision: str = "auto",
        progress: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(model, layer, **options)
        if check_precision(precision) == "int8":
            raise CamlensValueError("method 'occlusion' takes precision 'auto', 'fp32' or 'bf16'")
        if not isinstance(progress, bool):
            raise CamlensTypeError(f"progress must be True or False, got {progress!r}")
        self.window, self.stride = window, stride
        self.baseline = check_baseline(baseline, "baseline")
        self.precision, self.progress = precision, progress

    def reduce(self, attribution: torch.Tensor) -> torch.Tensor:
        return attribution.mean(dim=1)

    def _step(self, x: Any, target: Target) -> Step:
        xc = self.adapter.as_tensor(x)
        dims = xc.ndim - 2
        shape = tuple(xc.shape[2:])
        auto = tuple(min(16, max(1, n // 4)) for n in shape)
        window = auto if self.window is None else _sizes(self.window, dims, "window")
        stride = window if self.stride is None else _sizes(self.stride, dims, "stride")
        places = windows(shape, window, stride)
        reference = self._reference(xc, target)
        drops = reference.scores.to(xc.device)[:, None] - self._occluded_scores(
            xc, places, reference.target
        )
        total = torch.zeros(xc.shape[0], *xc.shape[2:], device=xc.device)
        count = torch.zeros(xc.shape[2:], device=xc.device)
        for index, place in enumerate(places):
            total[(slice(None),) + place] += drops[:, index].reshape(-1, *(1,) * dims)
            count[place] += 1
        attribution = (total / count)[:, None].expand_as(xc).contiguous()
        extra = {"windows": len(places)}
        return Step(self.reduce(attribution), reference, "", extra, attribution)

    def _occluded_scores(
        self, xc: torch.Tensor, places: list, target: targets_.ResolvedTarget
    ) -> torch.Tensor:
        """Target scores (B, P) of each image with each window replaced by the baseline."""
        batch, count = xc.shape[0], len(places)
        precision = resolved_precision(self.adapter, self.precision, self.name)
        cap = 128 if xc.device.type == "cuda" else 32
        rows = self.batch_size or auto_batch(xc, 64 * xc[0].numel() * 4, cap)
        base = torch.as_tensor(self.baseline, dtype=xc.dtype).to(xc.device).expand_as(xc)
        images = torch.arange(batch, device=xc.device).repeat_interleave(count)
        scores = torch.empty(batch * count, device=xc.device)
        progress = _Progress(batch * count, "Occlusion", self.progress)
        try:
            for start in range(0, batch * count, rows):
                stop = min(start + rows, batch * count)
                part = images[start:stop]
                copies = xc[part].clone()
                for row, flat in enumerate(range(start, stop)):
                    place = (slice(None), *places[flat % count])
                    copies[row][place] = base[int(part[row])][place]
                logits = self.adapter.infer(copies, precision=precision)
                scores[start:stop] = targets_.scores(logits, _row_target(target, part)).float()
                progress.advance(stop - start)
        finally:
            progress.close()
        return scores.reshape(batch, count)
