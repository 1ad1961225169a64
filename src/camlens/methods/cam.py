"""CAM: class activation maps of networks ending in global average pooling + one linear layer."""

from __future__ import annotations

import torch

from camlens.backends.base import Capture
from camlens.errors import CamlensValueError
from camlens.methods._registry import register
from camlens.methods.base import LayerMethod


def cam(activations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    r"""CAM (Zhou et al. 2016, arXiv:1512.04150).

    .. math:: M_c(i, j) = \sum_k w^c_k A^k_{ij}, \qquad
       \frac{1}{hw}\sum_{ij} M_c(i, j) = y^c - b^c

    ``activations`` (B, C, h, w), ``weights`` (B, C): each image's class row of the linear layer.
    """
    return torch.einsum("bc...,bc->b...", activations, weights)


@register("cam")
class CAM(LayerMethod):
    __doc__ = cam.__doc__
    paper = "Zhou et al. 2016, Learning Deep Features for Discriminative Localization"
    needs_gradients = False
    needs_head = True

    def combine(
        self, activations: torch.Tensor, gradients: torch.Tensor | None, capture: Capture
    ) -> torch.Tensor:
        head = capture.head
        if head is None:
            raise CamlensValueError(
                "method 'cam' needs a model whose logits come from one linear layer; this "
                "model's output is not produced by an nn.Linear. Use method='gradcam', which "
                "works with any head"
            )
        space = tuple(range(2, activations.ndim))
        pooled = activations.mean(dim=space)
        if head.features.shape != pooled.shape:
            raise CamlensValueError(
                f"method 'cam' needs the linear head to read the global average of the explained "
                f"layer, but the head takes {head.features.shape[1]} features and the layer has "
                f"{pooled.shape[1]} channels. Use method='gradcam', or the last conv layer"
            )
        tolerance = _tolerance(getattr(self.adapter, "dtype", torch.float32))
        if not _close(head.features, pooled, tolerance):
            if _close(head.features, activations.clamp_min(0).mean(dim=space), tolerance):
                activations = activations.clamp_min(0)  # a ReLU between layer and pooling
            else:
                raise CamlensValueError(
                    "method 'cam' needs the linear head to read the global average of the "
                    "explained layer's maps, but its input differs from that average. Use "
                    "method='gradcam', which works with any head"
                )
        indices = capture.target.indices.to(head.weight.device)
        if (indices < 0).any():
            raise CamlensValueError(
                "method 'cam' explains classes; a callable target needs a gradient method "
                "such as 'gradcam'"
            )
        if head.weight.shape[0] == 1:  # one logit: class 1 is +w, class 0 is -w
            weights = head.weight[0][None] * (indices.float() * 2 - 1)[:, None]
        else:
            weights = head.weight[indices]
        return cam(activations, weights.to(activations.device))


def _tolerance(dtype: torch.dtype) -> float:
    """How far the head's input may be from the layer's average, relative to its largest value:
    1e-3, or four roundings of a half-precision model's dtype (bfloat16: 0.03)."""
    return max(1e-3, 4 * torch.finfo(dtype).eps) if dtype.is_floating_point else 1e-3


def _close(a: torch.Tensor, b: torch.Tensor, tolerance: float = 1e-3) -> bool:
    """Whether (B, C) ``a`` and ``b`` agree within ``tolerance`` of ``b``'s largest value, on the
    images where both are finite (an image with NaN logits gets a NaN map)."""
    rows = torch.isfinite(a).all(dim=1) & torch.isfinite(b).all(dim=1)
    a, b = a[rows], b[rows]
    if not len(a):
        return True
    scale = max(float(b.abs().max()), 1e-30)
    return bool(((a - b).abs().max() / scale) < tolerance)
