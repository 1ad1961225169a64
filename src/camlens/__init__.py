"""camlens: where an image classifier looks. Class activation maps and their relatives."""

from camlens.backends.torch import CamlensWarning
from camlens.boxes import boxes
from camlens.errors import CamlensError, CamlensTypeError, CamlensValueError
from camlens.explanation import Explanation
from camlens.io import load_images
from camlens.layers import layers
from camlens.maps import minmax
from camlens.methods import (
    CAM,
    AblationCAM,
    EigenCAM,
    Explainer,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    HiResCAM,
    IntegratedGradients,
    LayerCAM,
    Saliency,
    ScoreCAM,
    SmoothGrad,
    XGradCAM,
)
from camlens.registry import explain, methods
from camlens.render import overlay

__version__ = "0.1.0"

__all__ = [
    "AblationCAM",
    "CAM",
    "CamlensError",
    "CamlensTypeError",
    "CamlensValueError",
    "CamlensWarning",
    "EigenCAM",
    "Explainer",
    "Explanation",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "IntegratedGradients",
    "LayerCAM",
    "Saliency",
    "ScoreCAM",
    "SmoothGrad",
    "XGradCAM",
    "boxes",
    "explain",
    "layers",
    "load_images",
    "methods",
    "minmax",
    "overlay",
]
