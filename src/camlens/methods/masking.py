"""Gradient-free maps from spatially masked features: Recipro-CAM."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from camlens.backends.base import Capture
from camlens.errors import CamlensValueError
from camlens.methods._registry import register
from camlens.methods.perturbation import _PerturbationCAM

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
        if mask not in MASKS:
            raise CamlensValueError(f"mask must be one of {', '.join(MASKS)}, got {mask!r}")
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
