"""Gradient-free maps from masks: Recipro-CAM (masked features), RISE (masked inputs)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from camlens.backends.base import Capture
from camlens.errors import CamlensValueError, check_choice
from camlens.methods._registry import register
from camlens.methods.base import Step
from camlens.methods.perturbation import (
    MaskedForwards,
    _PerturbationCAM,
    check_precision,
    check_progress,
)
from camlens.methods.pixel import PixelMethod
from camlens.targets import Target

KERNEL = torch.tensor([1.0, 2.0, 1.0])
MASKS = ("spatial", "gaussian")


def location_masks(grid: tuple[int, ...], kind: str) -> torch.Tensor:
    """(n, *grid) masks, one per location of the grid: that location alone ("spatial"), or the
    3x3 Gaussian [1 2 1]ᵀ[1 2 1] / 16 centred on it ("gaussian", 2-D grids)."""
    count = 1
    for size in grid:
        count *= size
    masks = torch.eye(count).reshape(count, *grid)
    if kind == "spatial":
        return masks
    if len(grid) != 2:
        raise CamlensValueError("mask='gaussian' needs a 2-D feature map; use mask='spatial'")
    kernel = (KERNEL[:, None] * KERNEL[None, :] / 16)[None, None]
    return F.conv2d(masks[:, None], kernel, padding=1)[:, 0]


@register("reciprocam", "recipro-cam")
class ReciproCAM(_PerturbationCAM):
    r"""Recipro-CAM (Byun & Lee 2024, CVPRW; arXiv:2209.14074): one forward of the network above
    the layer per feature location, no gradient.

    For each location :math:`ij` the layer's output is replaced by :math:`A \odot M^{ij}`, the
    features kept at that location only (``mask="spatial"``) or weighted by a 3x3 Gaussian around
    it (``mask="gaussian"``), and the target's score of that forward is the map's value there:

    .. math:: L_{ij} = y^c\big(f_{\text{above}}(A \odot M^{ij})\big)

    The masked copies run ``batch_size`` at a time through the layers above only (as
    Ablation-CAM). The paper reads the softmax probability; camlens reads the target's score
    (the logit, or a callable target's value), as every method here. On a GAP + linear head
    :math:`L_{ij} = w^c \cdot A_{ij} / hw + b^c`: CAM plus a constant.
    """

    paper = "Byun & Lee 2024, Recipro-CAM (CVPRW 2024, arXiv:2209.14074)"
    label = "Recipro-CAM"

    def __init__(
        self, model: Any, layer: Any = "auto", *, mask: str = "spatial", **options: Any
    ) -> None:
        super().__init__(model, layer, **options)
        check_choice(mask, MASKS, "mask")
        self.mask = mask

    def layer_raw(
        self,
        x: Any,
        name: str,
        activations: torch.Tensor,
        gradients: torch.Tensor | None,
        capture: Capture,
    ) -> torch.Tensor:
        grid = activations.shape[2:]
        masks = location_masks(tuple(grid), self.mask).to(activations)

        def masked_copies(image: int, start: int, stop: int) -> torch.Tensor:
            return activations[image][None] * masks[start:stop, None]

        scores = self.scores_above(x, name, activations, capture, masks.shape[0], masked_copies)
        return scores.reshape(activations.shape[0], *grid)


def rise_masks(
    count: int, size: tuple[int, ...], cells: int, p: float, generator: torch.Generator
) -> torch.Tensor:
    """(count, *size) RISE masks: a grid of ``cells`` Bernoulli(p) cells per dimension (H, W; or
    D, H, W for volumes), upsampled (bi/trilinearly) to (cells + 1) x cell size, cropped at a random
    shift below one cell."""
    if len(size) not in (2, 3):
        raise CamlensValueError(
            f"RISE needs (B, C, H, W) images or (B, C, D, H, W) volumes, got {len(size)} "
            "spatial dimensions"
        )
    cell = [-(-n // cells) for n in size]
    grid = (torch.rand(count, 1, *[cells] * len(size), generator=generator) < p).float()
    mode = "bilinear" if len(size) == 2 else "trilinear"
    big = F.interpolate(grid, size=tuple((cells + 1) * c for c in cell), mode=mode)[:, 0]
    shifts = [torch.randint(c, (count,), generator=generator).tolist() for c in cell]
    return torch.stack(
        [
            big[(i,) + tuple(slice(o, o + n) for o, n in zip(offsets, size))]
            for i, offsets in enumerate(zip(*shifts))
        ]
    )


@register("rise")
class RISE(MaskedForwards, PixelMethod):
    r"""RISE (Petsiuk et al. 2018, BMVC; arXiv:1806.07421): the target's score on randomly masked
    inputs, averaged with the masks as weights.

    .. math:: S = \frac{1}{N p} \sum_{i=1}^N y^c(x \odot M_i)\, M_i

    :math:`M_i` (:func:`rise_masks`): a ``cells`` x ``cells`` grid kept with probability ``p``,
    upsampled bilinearly and shifted at random (``seed`` fixes the draws, a CPU generator).
    ``num_masks`` N = 64 by default (the paper: 4000 to 8000; the cost is N forwards per image),
    ``batch_size`` and ``precision`` as for Score-CAM. The paper reads the softmax probability,
    uncentred; camlens the target's score (the logit, or a callable target's value), centred: a
    constant added to the score leaves the map unchanged, and a model that ignores its input gets
    a zero map rather than the masks' density :math:`\bar y^c \sum_i M_i / Np`.
    """

    paper = "Petsiuk et al. 2018, RISE (BMVC 2018, arXiv:1806.07421)"
    label = "RISE"
    smoothable = False

    def __init__(
        self,
        model: Any,
        layer: Any = "auto",
        *,
        num_masks: int = 64,
        cells: int = 8,
        p: float = 0.5,
        precision: str = "auto",
        progress: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(model, layer, **options)
        for key, value in (("num_masks", num_masks), ("cells", cells)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CamlensValueError(f"{key} must be a positive int, got {value!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise CamlensValueError(f"p must be a number in (0, 1], got {p!r}")
        check_precision(precision)
        check_progress(progress)
        self.num_masks, self.cells, self.p = num_masks, cells, float(p)
        self.precision, self.progress = precision, progress

    def masks(self, size: tuple[int, ...]) -> torch.Tensor:
        """The call's (N, *size) masks, the same on every call with the same seed."""
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return rise_masks(self.num_masks, size, self.cells, self.p, generator)

    def _step(self, x: Any, target: Target) -> Step:
        xc = self.adapter.as_tensor(x)
        capture = self._reference(xc, target)  # logits, targets, scores: no gradient
        masks = self.masks(tuple(xc.shape[2:])).to(xc)
        batch = xc.shape[0]
        images = torch.arange(batch, device=xc.device).repeat_interleave(self.num_masks)
        tiled = masks.repeat(batch, *[1] * (masks.ndim - 1))[:, None]
        scores = self.scored(
            xc, images, lambda rows: xc[images[rows]] * tiled[rows], capture.target
        )
        scores = scores.reshape(batch, -1)
        centred = scores - scores.mean(1, keepdim=True)
        saliency = (centred @ masks.flatten(1)).reshape(batch, *masks.shape[1:])
        saliency = saliency / (self.num_masks * self.p)
        return Step(saliency, capture, "", {}, saliency[:, None])
