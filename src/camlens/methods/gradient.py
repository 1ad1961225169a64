"""Gradient-weighted class activation maps: Grad-CAM and its family.

With activations :math:`A^k` of the explained layer and gradients :math:`g^k = \\partial y^c /
\\partial A^k` of the target's pre-softmax score, every method here is a weighted sum over channels
computed in float32 without epsilons (a zero denominator gives a zero weight). Clips and volumes
(B, C, t, h, w) are the same with the sums over :math:`ij` taken over :math:`tij`.
"""

from __future__ import annotations

import torch

from camlens.backends.base import Capture
from camlens.methods._registry import register
from camlens.methods.base import LayerMethod


def _space(activations: torch.Tensor) -> tuple[int, ...]:
    """The location dimensions: (2, 3) of a (B, C, h, w) map, (2, 3, 4) of a (B, C, t, h, w) one."""
    return tuple(range(2, activations.ndim))


def gradcam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    r"""Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391).

    .. math:: \alpha_k = \frac{1}{hw}\sum_{ij} g^k_{ij}, \qquad L = \sum_k \alpha_k A^k
    """
    weights = gradients.mean(dim=_space(activations), keepdim=True)
    return (weights * activations).sum(dim=1)


def gradcam_plus_plus(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    r"""Grad-CAM++ (Chattopadhay et al. 2018, arXiv:1710.11063, Eq. 19 with an exponential score).

    .. math:: \alpha^k_{ij} = \frac{(g^k_{ij})^2}{2 (g^k_{ij})^2 + \sum_{ab} A^k_{ab} (g^k_{ij})^3},
       \quad w_k = \sum_{ij} \alpha^k_{ij}\,\mathrm{relu}(g^k_{ij}), \quad L = \sum_k w_k A^k

    :math:`\alpha = 0` where the denominator is 0 (so where :math:`g = 0`). Unlike
    pytorch-grad-cam no 1e-6 is added to the denominator (it dominates gradients of ~1e-3).
    """
    g2 = gradients.pow(2)
    denominator = 2 * g2 + activations.sum(dim=_space(activations), keepdim=True) * g2 * gradients
    nonzero = denominator != 0
    alpha = torch.where(nonzero, g2 / torch.where(nonzero, denominator, 1.0), 0.0)
    weights = (alpha * gradients.clamp_min(0)).sum(dim=_space(activations), keepdim=True)
    return (weights * activations).sum(dim=1)


def xgradcam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    r"""XGrad-CAM (Fu et al. 2020, arXiv:2008.02312).

    .. math:: \alpha_k = \sum_{ij} \frac{A^k_{ij}}{\sum_{ab} A^k_{ab}} g^k_{ij},
       \qquad L = \sum_k \alpha_k A^k

    A channel whose activations sum to 0 gets weight 0.
    """
    total = activations.sum(dim=_space(activations), keepdim=True)
    nonzero = total != 0
    share = torch.where(nonzero, activations / torch.where(nonzero, total, 1.0), 0.0)
    weights = (share * gradients).sum(dim=_space(activations), keepdim=True)
    return (weights * activations).sum(dim=1)


def hirescam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    r"""HiResCAM (Draelos & Carin 2020, arXiv:2011.08891): the element-wise product.

    .. math:: L_{ij} = \sum_k g^k_{ij} A^k_{ij}
    """
    return (gradients * activations).sum(dim=1)


def layercam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    r"""Layer-CAM (Jiang et al. 2021, IEEE TIP 30:5875): positive gradients as spatial weights.

    .. math:: L_{ij} = \sum_k \mathrm{relu}(g^k_{ij})\, A^k_{ij}
    """
    return (gradients.clamp_min(0) * activations).sum(dim=1)


class _GradientMethod(LayerMethod):
    autocasts = True  # precision="bf16": forward and backward under bfloat16 autocast
    bf16_auto = True  # the maps agree with float32's (tests/methods/test_bf16.py)
    function = staticmethod(gradcam)

    def combine(
        self, activations: torch.Tensor, gradients: torch.Tensor | None, capture: Capture
    ) -> torch.Tensor:
        assert gradients is not None
        return type(self).function(activations, gradients)


@register("gradcam", "grad-cam")
class GradCAM(_GradientMethod):
    __doc__ = gradcam.__doc__
    paper = "Selvaraju et al. 2017, Grad-CAM (arXiv:1610.02391)"
    function = staticmethod(gradcam)


@register("gradcam++", "gradcampp", "grad-cam++", "gradcamplusplus")
class GradCAMPlusPlus(_GradientMethod):
    __doc__ = gradcam_plus_plus.__doc__
    paper = "Chattopadhay et al. 2018, Grad-CAM++ (arXiv:1710.11063)"
    function = staticmethod(gradcam_plus_plus)


@register("xgradcam", "xgrad-cam")
class XGradCAM(_GradientMethod):
    __doc__ = xgradcam.__doc__
    paper = "Fu et al. 2020, Axiom-based Grad-CAM (arXiv:2008.02312)"
    bf16_auto = False  # its activation shares amplify bf16 rounding (DenseNet-121: corr 0.13)
    function = staticmethod(xgradcam)


@register("hirescam", "hires-cam")
class HiResCAM(_GradientMethod):
    __doc__ = hirescam.__doc__
    paper = "Draelos & Carin 2020, HiResCAM (arXiv:2011.08891)"
    function = staticmethod(hirescam)


@register("layercam", "layer-cam")
class LayerCAM(_GradientMethod):
    __doc__ = layercam.__doc__
    paper = "Jiang et al. 2021, LayerCAM (IEEE TIP 30:5875)"
    function = staticmethod(layercam)
