"""camlens: where an image classifier looks. Class activation maps and their relatives."""

import importlib.metadata

from camlens import targets
from camlens.boxes import boxes
from camlens.detect import Detections, explain_detections
from camlens.errors import (
    CamlensError,
    CamlensImportError,
    CamlensTypeError,
    CamlensValueError,
    CamlensWarning,
)
from camlens.explanation import Explanation
from camlens.figures import plot
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


def _installed_version() -> str:
    """The installed distribution's version; "0+unknown" for a source tree never installed."""
    try:
        return importlib.metadata.version("camlens")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _installed_version()


def __getattr__(name: str):
    """Lazy exports: training, checkpoints and run folders (pandas, pyarrow) load on first
    use."""
    if name in ("Classifier", "load_model"):
        from camlens import checkpoint

        return getattr(checkpoint, name)
    if name == "train":
        from camlens.training import train

        return train
    if name in ("Run", "load_run"):
        from camlens import run

        return getattr(run, name)
    if name == "datasets":
        return importlib.import_module("camlens.datasets")
    raise AttributeError(f"module 'camlens' has no attribute {name!r}")


__all__ = [
    "AblationCAM",
    "CAM",
    "CamlensError",
    "CamlensImportError",
    "CamlensTypeError",
    "CamlensValueError",
    "CamlensWarning",
    "Detections",
    "Classifier",
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
    "Run",
    "Saliency",
    "ScoreCAM",
    "SmoothGrad",
    "XGradCAM",
    "boxes",
    "explain",
    "explain_detections",
    "layers",
    "load_model",
    "load_images",
    "load_run",
    "methods",
    "minmax",
    "overlay",
    "plot",
    "targets",
    "train",
]
