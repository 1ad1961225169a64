"""CAM-family variants of pytorch-grad-cam 1.5.7: Eigen-Grad-CAM, element-wise Grad-CAM and
KPCA-CAM, registered after the original methods. With activations :math:`A^k` and gradients
:math:`g^k` as in :mod:`camlens.methods.gradient`; the two projections reuse Eigen-CAM's centring
and sign rule (:mod:`camlens.methods.eigen`)."""

from __future__ import annotations

from typing import Any

import torch

from camlens.backends.base import Capture
from camlens.errors import CamlensValueError, check_choice
from camlens.methods._registry import register
from camlens.methods.base import LayerMethod
from camlens.methods.eigen import _centred, _oriented, eigencam
from camlens.methods.gradient import _GradientMethod


def gradcam_elementwise(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    r"""Element-wise Grad-CAM (pytorch-grad-cam's ``GradCAMElementWise``): each channel's
    product rectified before the sum.

    .. math:: L_{ij} = \sum_k \mathrm{relu}(g^k_{ij} A^k_{ij})
    """
    return (gradients * activations).clamp_min(0).sum(dim=1)


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


@register("eigengradcam", "eigen-grad-cam", "eigen-gradcam")
class EigenGradCAM(_GradientMethod):
    __doc__ = eigengradcam.__doc__
    paper = "pytorch-grad-cam's EigenGradCAM, after Muhammad & Yeasin 2020 (arXiv:2008.00299)"
    function = staticmethod(eigengradcam)


@register("gradcam-elementwise", "grad-cam-elementwise", "gradcamelementwise")
class GradCAMElementWise(_GradientMethod):
    __doc__ = gradcam_elementwise.__doc__
    paper = "pytorch-grad-cam's GradCAMElementWise, after HiResCAM (arXiv:2011.08891)"
    function = staticmethod(gradcam_elementwise)


@register("kpcacam", "kpca-cam")
class KPCACAM(LayerMethod):
    __doc__ = kpca.__doc__
    paper = "Karmani et al. 2024, KPCA-CAM (arXiv:2410.00267)"
    needs_gradients = False

    def __init__(
        self,
        model: Any,
        layer: Any = "auto",
        *,
        kernel: str = "sigmoid",
        gamma: float | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, layer, **options)
        check_choice(kernel, KERNELS, "kernel")
        number = isinstance(gamma, (int, float)) and not isinstance(gamma, bool)
        if gamma is not None and not (number and gamma > 0):
            raise CamlensValueError(f"gamma must be a number > 0 or None, got {gamma!r}")
        self.kernel = kernel
        self.gamma = gamma

    def combine(
        self, activations: torch.Tensor, gradients: torch.Tensor | None, capture: Capture
    ) -> torch.Tensor:
        return kpca(activations, self.kernel, self.gamma)
