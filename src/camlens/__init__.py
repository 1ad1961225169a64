"""camlens: where an image classifier looks. Class activation maps and their relatives."""

import importlib
import importlib.metadata
from typing import TYPE_CHECKING, Any

from camlens._deprecation import MOVED_MODULES, install

if TYPE_CHECKING:  # the names as static analysis (type checkers, the API docs) sees them
    from camlens import methods, targets
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
    from camlens.models.checkpoint import Classifier, load_model
    from camlens.models.training import train
    from camlens.models.zero_shot import ZeroShot, zero_shot
    from camlens.runs.folder import Run, load_run
    from camlens.targets.detector import Detections, explain_detections
    from camlens.visualize.boxes import boxes
    from camlens.visualize.figures import plot
    from camlens.visualize.render import overlay

#: Public name -> the module it lives in. ``import camlens`` loads none of them (the command line
#: starts without torch); a name's module is imported on its first use (PEP 562).
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ("CamlensError", "CamlensImportError", "CamlensTypeError", "CamlensValueError",
         "CamlensWarning"),
        "camlens.errors",
    ),
    **dict.fromkeys(
        ("CAM", "ISCAM", "KPCACAM", "RISE", "SSCAM", "AblationCAM", "Deconvolution", "EigenCAM",
         "EigenGradCAM", "Explainer", "FinerCAM", "FullGrad", "GradCAM", "GradCAMElementWise",
         "GradCAMPlusPlus", "GradientShap", "GuidedBackprop", "GuidedGradCAM", "HiResCAM",
         "InputXGradient", "IntegratedGradients", "LayerCAM", "LeGrad", "Occlusion", "ReciproCAM",
         "RefineCAM", "Rollout", "Saliency", "ScoreCAM", "ShapleyCAM", "SmoothGrad",
         "TransformerAttribution", "XGradCAM"),
        "camlens.methods",
    ),
    "Explanation": "camlens.explanation",
    "layers": "camlens.backends.survey",
    "load_images": "camlens.images.load",
    "minmax": "camlens.maps",
    "explain": "camlens.methods._registry",
    "Detections": "camlens.targets.detector",
    "explain_detections": "camlens.targets.detector",
    "boxes": "camlens.visualize.boxes",
    "plot": "camlens.visualize.figures",
    "overlay": "camlens.visualize.render",
    "Classifier": "camlens.models.checkpoint",
    "load_model": "camlens.models.checkpoint",
    "train": "camlens.models.training",
    "ZeroShot": "camlens.models.zero_shot",
    "zero_shot": "camlens.models.zero_shot",
    "Run": "camlens.runs.folder",
    "load_run": "camlens.runs.folder",
}  # fmt: skip
#: Public subpackages, imported on first use.
_SUBMODULES = ("methods", "targets", "datasets")

install()  # old module paths (camlens.io, camlens.app.session, ...) keep working for one release


def _installed_version() -> str:
    """The installed distribution's version; "0+unknown" for a source tree never installed."""
    try:
        return importlib.metadata.version("camlens")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _installed_version()


def __getattr__(name: str) -> Any:
    """Lazy exports (:data:`_EXPORTS`, the public subpackages, the moved modules' shims): each is
    imported on first use and then kept as a plain attribute."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"camlens.{name}")
    elif f"camlens.{name}" in MOVED_MODULES:  # a module that moved: its shim warns on use
        return importlib.import_module(f"camlens.{name}")
    else:
        raise AttributeError(f"module 'camlens' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
