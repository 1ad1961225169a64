"""The built-in methods; importing this package registers them, in the order listed here.

``camlens.methods()`` lists the registered names: the package itself is callable, so that
``camlens.methods.GradCAM`` and ``camlens.methods()`` both mean what they say."""

import sys
import types

from camlens.methods import _registry

# isort: off
from camlens.methods.base import Explainer, LayerMethod
from camlens.methods.cam import CAM
from camlens.methods.gradient import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from camlens.methods.eigen import EigenCAM
from camlens.methods.perturbation import AblationCAM, ScoreCAM
from camlens.methods.pixel import (
    Deconvolution,
    GradientShap,
    GuidedBackprop,
    GuidedGradCAM,
    InputXGradient,
    IntegratedGradients,
    PixelMethod,
    Saliency,
    SmoothGrad,
)
from camlens.methods.variants import EigenGradCAM, GradCAMElementWise, KPCACAM
from camlens.methods.occlusion import Occlusion
from camlens.methods.sampled import ISCAM, SSCAM
from camlens.methods.masking import RISE, ReciproCAM
from camlens.methods.shapley import ShapleyCAM
from camlens.methods.fullgrad import FullGrad
from camlens.methods.composite import FinerCAM, RefineCAM
from camlens.methods.attention import AttentionMethod, LeGrad, Rollout, TransformerAttribution
# isort: on

__all__ = [
    "AblationCAM",
    "AttentionMethod",
    "CAM",
    "Deconvolution",
    "EigenCAM",
    "EigenGradCAM",
    "Explainer",
    "FullGrad",
    "FinerCAM",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GradientShap",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "InputXGradient",
    "ISCAM",
    "IntegratedGradients",
    "KPCACAM",
    "LayerCAM",
    "LayerMethod",
    "LeGrad",
    "Occlusion",
    "PixelMethod",
    "RISE",
    "ReciproCAM",
    "RefineCAM",
    "Rollout",
    "Saliency",
    "ScoreCAM",
    "SSCAM",
    "ShapleyCAM",
    "SmoothGrad",
    "TransformerAttribution",
    "XGradCAM",
]


class _CallableModule(types.ModuleType):
    """This package, callable: ``camlens.methods()`` lists the registered method names."""

    def __call__(self, model: object = None) -> list[str]:
        """The registered method names, in registration order; with ``model``, those that apply
        to it."""
        return _registry.methods(model)


sys.modules[__name__].__class__ = _CallableModule
