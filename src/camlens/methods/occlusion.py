"""Occlusion (Zeiler & Fergus 2014): the drop of the target's score when a window of the input is
replaced by a baseline, as Captum's ``Occlusion`` computes it, the forwards batched."""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from camlens import targets as targets_
from camlens.errors import CamlensValueError
from camlens.methods._registry import register
from camlens.methods.base import Step
from camlens.methods.perturbation import MaskedForwards, check_precision, check_progress
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
class Occlusion(MaskedForwards, PixelMethod):
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
    mode, channels-last, ``batch_size`` at a time; ``precision`` "auto", "fp32" (exact), "bf16" or
    "int8" as Score-CAM's (the fastest on CPUs with VNNI; in "bf16" and "int8" the clean score
    :math:`y^c(x)` is computed in the same precision, so that its rounding cancels in the drops).
    ``exp.raw`` is :math:`a` (signed: positive where occluding lowers the score);
    ``exp.extra["attribution"]`` repeats it over the channels, as Captum's.
    """

    paper = "Zeiler & Fergus 2014, Visualizing and Understanding CNNs (arXiv:1311.2901)"
    label = "Occlusion"
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
        check_precision(precision)
        check_progress(progress)
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
        if self.resolved_precision() == "fp32":
            clean = reference.scores.to(xc.device)
            drops = clean[:, None] - self._occluded_scores(xc, places, reference.target)
        else:  # the clean score in the same precision, so that its rounding cancels
            scores = self._occluded_scores(xc, [*places, None], reference.target)
            drops = scores[:, -1:] - scores[:, :-1]
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
        """Target scores (B, P) of each image with each window replaced by the baseline (a
        ``None`` place: the image unchanged)."""
        batch, count = xc.shape[0], len(places)
        base = torch.as_tensor(self.baseline, dtype=xc.dtype).to(xc.device).expand_as(xc)
        images = torch.arange(batch, device=xc.device).repeat_interleave(count)

        def occluded(rows: torch.Tensor) -> torch.Tensor:
            copies = xc[images[rows]].clone()
            for row, flat in enumerate(rows.tolist()):
                if places[flat % count] is not None:
                    place = (slice(None), *places[flat % count])
                    copies[row][place] = base[flat // count][place]
            return copies

        return self.scored(xc, images, occluded, target).reshape(batch, count)
