"""Eigen-CAM: the first principal component of the activations."""

from __future__ import annotations

import torch

from camlens.backends.base import Capture
from camlens.methods._registry import register
from camlens.methods.base import LayerMethod


def eigencam(activations: torch.Tensor) -> torch.Tensor:
    r"""Eigen-CAM (Muhammad & Yeasin 2020, arXiv:2008.00299), batched in torch.

    With :math:`X \in \mathbb{R}^{hw \times C}` the activations centred per channel over locations
    and :math:`X = U \Sigma V^\top`, the map is the projection on the first right singular vector:

    .. math:: L = X v_1, \qquad \operatorname{sign}(v_1) \text{ chosen so that }
       \langle L, \bar A - \operatorname{mean}(\bar A) \rangle \ge 0,\ \bar A = \tfrac1C\sum_k A^k

    The sign rule makes the map correlate positively with the activations (an SVD's sign is
    arbitrary; pytorch-grad-cam leaves it so). Class-agnostic: the target changes nothing. An
    image whose activations hold NaN or inf gets a NaN map.
    """
    x, finite = _centred(activations)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    return _oriented(x @ vh[:, 0, :, None], activations, finite)


def _centred(activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, hw, C) locations centred per channel (zeros for an image holding NaN or inf, the
    SVD fails on NaN) and which images are finite (B,)."""
    x = activations.flatten(2).transpose(1, 2)
    finite = torch.isfinite(x).flatten(1).all(dim=1)
    x = torch.where(finite[:, None, None], x, 0.0)
    return x - x.mean(dim=1, keepdim=True), finite


def _oriented(
    projection: torch.Tensor, activations: torch.Tensor, finite: torch.Tensor
) -> torch.Tensor:
    """The (B, hw, 1) projection as a (B, *grid) map, signed to correlate positively with the
    centred channel-mean map of ``activations`` (NaN where the image is not finite)."""
    batch, _, *grid = activations.shape  # (h, w), or (t, h, w) for clips and volumes
    mean_map = activations.mean(dim=1).reshape(batch, -1, 1)
    mean_map = mean_map - mean_map.mean(dim=1, keepdim=True)
    sign = torch.where((projection * mean_map).sum(dim=(1, 2)) < 0, -1.0, 1.0)
    sign = torch.where(finite, sign, torch.nan)
    return (projection[..., 0] * sign[:, None]).reshape(batch, *grid)


@register("eigencam", "eigen-cam")
class EigenCAM(LayerMethod):
    __doc__ = eigencam.__doc__
    paper = "Muhammad & Yeasin 2020, Eigen-CAM (arXiv:2008.00299)"
    needs_gradients = False

    def combine(
        self, activations: torch.Tensor, gradients: torch.Tensor | None, capture: Capture
    ) -> torch.Tensor:
        return eigencam(activations)
