"""Models: specs (``torchvision:resnet50``, files, ``package.module:factory``), weights,
camlens checkpoints, CAM-ready architectures and their training.

``camlens.models.load_spec`` and its companions are the specs module's names, re-exported here
where they have always been."""

from camlens.models.specs import (
    DETAIL,
    FORMS,
    LOAD_ERRORS,
    class_names,
    kind_of,
    load_exported,
    load_spec,
)

__all__ = ["DETAIL", "FORMS", "LOAD_ERRORS", "class_names", "kind_of", "load_exported", "load_spec"]
