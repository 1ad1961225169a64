"""The built-in methods; importing this package registers them, in the order listed here."""

# isort: off
from camlens.methods.base import Explainer, LayerMethod
from camlens.methods.cam import CAM
from camlens.methods.gradient import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from camlens.methods.eigen import EigenCAM
from camlens.methods.perturbation import AblationCAM, ScoreCAM
from camlens.methods.pixel import (
    GuidedBackprop,
    GuidedGradCAM,
    IntegratedGradients,
    PixelMethod,
    Saliency,
    SmoothGrad,
)
# isort: on

__all__ = [
    "AblationCAM",
    "CAM",
    "EigenCAM",
    "Explainer",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "IntegratedGradients",
    "LayerCAM",
    "LayerMethod",
    "PixelMethod",
    "Saliency",
    "ScoreCAM",
    "SmoothGrad",
    "XGradCAM",
]
