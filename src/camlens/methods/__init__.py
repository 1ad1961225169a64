"""The built-in methods; importing this package registers them, in the order listed here."""

# isort: off
from camlens.methods.base import Explainer, LayerMethod
from camlens.methods.cam import CAM
from camlens.methods.gradient import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from camlens.methods.eigen import EigenCAM
# isort: on

__all__ = [
    "CAM",
    "EigenCAM",
    "Explainer",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "LayerMethod",
    "XGradCAM",
]
