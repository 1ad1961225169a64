"""camlens: where an image classifier looks. Class activation maps and their relatives."""

import importlib
import importlib.metadata

from camlens import methods, targets
from camlens._deprecation import MOVED_MODULES, install
from camlens.backends.survey import layers
from camlens.errors import (
    CamlensError,
    CamlensImportError,
    CamlensTypeError,
    CamlensValueError,
    CamlensWarning,
)
from camlens.explanation import Explanation
from camlens.images.load import load_images
from camlens.maps import minmax
from camlens.methods import (
    CAM,
    ISCAM,
    KPCACAM,
    RISE,
    SSCAM,
    AblationCAM,
    Deconvolution,
    EigenCAM,
    EigenGradCAM,
    Explainer,
    FinerCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    GradientShap,
    GuidedBackprop,
    GuidedGradCAM,
    HiResCAM,
    InputXGradient,
    IntegratedGradients,
    LayerCAM,
    LeGrad,
    Occlusion,
    ReciproCAM,
    RefineCAM,
    Rollout,
    Saliency,
    ScoreCAM,
    ShapleyCAM,
    SmoothGrad,
    TransformerAttribution,
    XGradCAM,
)
from camlens.methods._registry import explain
from camlens.targets.detector import Detections, explain_detections
from camlens.visualize.boxes import boxes
from camlens.visualize.figures import plot
from camlens.visualize.render import overlay

install()  # old module paths (camlens.io, camlens.app.session, ...) keep working for one release


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
        from camlens.models import checkpoint

        return getattr(checkpoint, name)
    if name in ("zero_shot", "ZeroShot"):
        from camlens.models import zero_shot

        return getattr(zero_shot, name)
    if name == "train":
        from camlens.models.training import train

        return train
    if name in ("Run", "load_run"):
        from camlens.runs import folder as run

        return getattr(run, name)
    if name == "datasets":
        return importlib.import_module("camlens.datasets")
    if f"camlens.{name}" in MOVED_MODULES:  # a module that moved: its shim warns on use
        return importlib.import_module(f"camlens.{name}")
    raise AttributeError(f"module 'camlens' has no attribute {name!r}")


__all__ = [
    "AblationCAM",
    "ISCAM",
    "SSCAM",
    "ReciproCAM",
    "RefineCAM",
    "RISE",
    "ShapleyCAM",
    "FullGrad",
    "Rollout",
    "TransformerAttribution",
    "LeGrad",
    "CAM",
    "CamlensError",
    "CamlensImportError",
    "CamlensTypeError",
    "CamlensValueError",
    "CamlensWarning",
    "Deconvolution",
    "Detections",
    "Classifier",
    "EigenCAM",
    "EigenGradCAM",
    "Explainer",
    "Explanation",
    "FinerCAM",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GradientShap",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "InputXGradient",
    "IntegratedGradients",
    "KPCACAM",
    "LayerCAM",
    "Occlusion",
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
    "ZeroShot",
    "zero_shot",
]
