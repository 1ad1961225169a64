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


def eigengradcam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    r"""Eigen-Grad-CAM (pytorch-grad-cam's ``EigenGradCAM``): Eigen-CAM of :math:`g \odot A`.

    With :math:`X` the products :math:`g^k_{ij} A^k_{ij}` centred per channel over locations:

    .. math:: L = X v_1, \qquad \operatorname{sign}(v_1) \text{ chosen so that }
       \langle L, H - \operatorname{mean}(H) \rangle \ge 0,\ H = \sum_k g^k A^k

    so that the map correlates positively with HiResCAM's :math:`H` (pytorch-grad-cam leaves the
    SVD's sign arbitrary). Class-discriminative, unlike Eigen-CAM.
    """
    return eigencam(gradients * activations)


#: The kernels of :func:`kpca`, named as scikit-learn's ``pairwise_kernels``.
KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


def _kernel(x: torch.Tensor, kernel: str, gamma: float) -> torch.Tensor:
    """The (B, n, n) kernel matrix of the (B, n, C) rows, scikit-learn's with ``coef0=1`` and
    ``degree=3``."""
    if kernel == "rbf":
        distance = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
        return torch.exp(-gamma * distance.pow(2))
    if kernel == "cosine":
        norm = x.norm(dim=2, keepdim=True)
        x = x / torch.where(norm == 0, 1.0, norm)
    gram = x @ x.transpose(1, 2)
    if kernel == "sigmoid":
        return torch.tanh(gamma * gram + 1)
    if kernel == "poly":
        return (gamma * gram + 1).pow(3)
    return gram


def kpca(
    activations: torch.Tensor, kernel: str = "sigmoid", gamma: float | None = None
) -> torch.Tensor:
    r"""KPCA-CAM (Karmani et al. 2024, arXiv:2410.00267): Eigen-CAM with kernel PCA.

    With :math:`x_i` the activations at location :math:`i` centred per channel, :math:`K_{ij} =
    \kappa(x_i, x_j)` (default sigmoid :math:`\tanh(\gamma\, x_i^\top x_j + 1)`,
    :math:`\gamma = 1/C`), :math:`\tilde K = (I - \tfrac1n 1 1^\top) K (I - \tfrac1n 1 1^\top)`
    and :math:`(\lambda_1, u_1)` its leading eigenpair:

    .. math:: L = \sqrt{\lambda_1}\, u_1

    as scikit-learn's ``KernelPCA(n_components=1).fit_transform``, which pytorch-grad-cam's
    ``KPCA_CAM`` calls; the sign is Eigen-CAM's rule (positive correlation with the centred
    channel-mean map) where scikit-learn makes the largest :math:`|u_{1,i}|` positive.
    Computed in float64 (as scikit-learn's distances), returned in the activations' dtype.
    """
    x, finite = _centred(activations)
    x = x.double()  # kernels such as rbf's exp(-gamma d^2) lose digits in float32
    k = _kernel(x, kernel, 1.0 / x.shape[2] if gamma is None else gamma)
    k = (
        k
        - k.mean(dim=1, keepdim=True)
        - k.mean(dim=2, keepdim=True)
        + k.mean(dim=(1, 2), keepdim=True)
    )
    values, vectors = torch.linalg.eigh(k)
    projection = vectors[..., -1:] * values[:, -1].clamp_min(0).sqrt()[:, None, None]
    return _oriented(projection.to(activations.dtype), activations, finite)


@register("eigencam", "eigen-cam")
class EigenCAM(LayerMethod):
    __doc__ = eigencam.__doc__
    paper = "Muhammad & Yeasin 2020, Eigen-CAM (arXiv:2008.00299)"
    needs_gradients = False

    def combine(
        self, activations: torch.Tensor, gradients: torch.Tensor | None, capture: Capture
    ) -> torch.Tensor:
        return eigencam(activations)
