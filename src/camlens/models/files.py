"""Where model files are: a camlens checkpoint folder's file names and the bundled demo models.

The lowest level of :mod:`camlens.models`: checkpoints (:mod:`~camlens.models.checkpoint`) and
weights (:mod:`~camlens.models.weights`) both read these names.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: A checkpoint folder's state dict (safetensors) and its description (JSON).
WEIGHTS = "model.safetensors"
CONFIG = "camlens.json"


#: the bundled checkpoints, loaded by name: the demo CNN (camlens:smallcnn, with the sample
#: images) and the demo vision transformer (camlens:smallvit), trained on the same digits
BUNDLED = ("demo", "demo-vit")


def demo_path(name: str = "demo") -> Path:
    """The folder of bundled model ``name`` ("demo": also the sample images, ``samples/``)."""
    return Path(str(files("camlens") / "data" / name))
