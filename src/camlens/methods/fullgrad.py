r"""FullGrad (Srinivas & Fleuret 2019, arXiv:1905.00780): the input-gradient and the
bias-gradients of every convolution and batch normalisation, each made positive and scaled.

pytorch-grad-cam 1.5.7's ``FullGrad`` post-processing, map by map: with
:math:`\psi(m) = \frac{m - \min m}{\max (m - \min m) + 10^{-7}}` over one channel's locations and
:math:`U` the bilinear resize to the input,

.. math:: S = \sum_c \psi\big(|x_c \odot \nabla_{x_c} y^c|\big)
   + \sum_{l} U\Big(\sum_k \psi\big(|b^l_k\, g^{l,k}|\big)\Big)

over every ``Conv2d``/``Conv3d`` with a bias and every ``BatchNorm2d``/``BatchNorm3d`` (eval
mode: its bias :math:`b = \beta - \mu\gamma/\sqrt{\sigma^2 + \epsilon}`), :math:`g^{l,k}` the
gradient with respect to channel :math:`k` of layer :math:`l`'s output. The resize commutes with
the channel sum (it is linear), so each layer is summed at its own resolution first. A layer
that runs several times in a forward pass (a detector's shared head) adds one map per call.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn as nn

from camlens.backends.torch_hooks import hooked
from camlens.errors import CamlensValueError
from camlens.maps import upsample
from camlens.methods._registry import register
from camlens.methods.base import Step
from camlens.methods.pixel import PixelMethod
from camlens.targets import Target

#: The layers whose bias-gradients FullGrad sums.
BIAS_LAYERS = (nn.Conv2d, nn.Conv3d, nn.BatchNorm2d, nn.BatchNorm3d)
#: pytorch-grad-cam's epsilon in each map's scaling (``scale_cam_image``).
EPS = 1e-7


def bias_of(layer: nn.Module) -> torch.Tensor:
    """The bias a layer adds in eval mode: a convolution's, or batch normalisation's
    :math:`\\beta - \\mu\\gamma/\\sqrt{\\sigma^2 + \\epsilon}` (its batch statistics unknown
    without running means: then :math:`\\beta`)."""
    bias = cast(torch.Tensor, layer.bias).detach().float()
    if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.running_mean is not None:
        assert layer.running_var is not None
        scale = layer.weight.detach().float() if layer.weight is not None else 1.0
        std = torch.sqrt(layer.running_var.float() + layer.eps)
        bias = bias - layer.running_mean.float() * scale / std
    return bias


def bias_layers(model: nn.Module) -> list[str]:
    """The names of the modules of ``model`` that add a bias, in ``named_modules`` order."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, BIAS_LAYERS) and getattr(module, "bias", None) is not None
    ]


def scaled(maps: torch.Tensor) -> torch.Tensor:
    """:math:`\\psi`: each (B, C) map of a (B, C, ...) batch shifted to 0 and divided by its
    span plus :data:`EPS`, pytorch-grad-cam's ``scale_cam_image``."""
    dims = tuple(range(2, maps.ndim))
    shifted = maps - maps.amin(dim=dims, keepdim=True)
    return shifted / (shifted.amax(dim=dims, keepdim=True) + EPS)


@register("fullgrad", "full-grad")
class FullGrad(PixelMethod):
    __doc__ = __doc__
    paper = "Srinivas & Fleuret 2019, Full-Gradient Representation (arXiv:1905.00780)"
    autocasts = False  # the bias-gradients of every layer run in float32

    def __init__(self, model: Any, layer: Any = "auto", **options: Any) -> None:
        super().__init__(model, layer, **options)
        if self.adapter.framework != "torch":
            raise CamlensValueError(
                f"method {self.name!r} (bias-gradients of every layer) is implemented for "
                "PyTorch models only; use method='input-x-gradient' for Keras models"
            )

    def _step(self, x: Any, target: Target) -> Step:
        """One backward pass to the input; hooks on every bias layer's output keep the gradient
        reaching it (each call of a layer that runs several times: one map each)."""
        model = self.adapter.model
        found: list[tuple[nn.Module, torch.Tensor]] = []

        def keep(module: nn.Module, args: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(lambda gradient: found.append((module, gradient)))

        layers = [model.get_submodule(name) for name in bias_layers(model)]
        with hooked([(layer, keep) for layer in layers]):
            pixels = self.adapter.input_gradients(x, target)
        attribution = pixels.activations[0] * pixels.gradients[0]
        size = tuple(attribution.shape[2:])
        total = scaled(attribution.abs()).sum(dim=1)
        for layer, gradient in found:
            gradient = gradient.detach().float()
            bias = bias_of(layer).to(gradient.device)
            shape = (1, -1) + (1,) * (gradient.ndim - 2)
            part = scaled((bias.reshape(shape) * gradient).abs()).sum(dim=1)
            total = total + upsample(part, size).to(total.device)
        return Step(total, pixels, "", {}, attribution)
