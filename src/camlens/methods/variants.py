"""CAM-family variants of pytorch-grad-cam 1.5.7: Eigen-Grad-CAM, element-wise Grad-CAM and
KPCA-CAM. Their formulas live beside their families' (:mod:`camlens.methods.gradient`,
:mod:`camlens.methods.eigen`); this module registers them after the original methods."""

from __future__ import annotations

from typing import Any

import torch

from camlens.backends.base import Capture
from camlens.errors import CamlensValueError
from camlens.methods._registry import register
from camlens.methods.base import LayerMethod
from camlens.methods.eigen import KERNELS, eigengradcam, kpca
from camlens.methods.gradient import _GradientMethod, gradcam_elementwise


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
        if kernel not in KERNELS:
            raise CamlensValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        number = isinstance(gamma, (int, float)) and not isinstance(gamma, bool)
        if gamma is not None and not (number and gamma > 0):
            raise CamlensValueError(f"gamma must be a number > 0 or None, got {gamma!r}")
        self.kernel = kernel
        self.gamma = gamma

    def combine(
        self, activations: torch.Tensor, gradients: torch.Tensor | None, capture: Capture
    ) -> torch.Tensor:
        return kpca(activations, self.kernel, self.gamma)
