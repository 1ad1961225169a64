"""Where model files are: a camlens checkpoint folder's file names and the bundled demo model.

The lowest level of :mod:`camlens.models`: checkpoints (:mod:`~camlens.models.checkpoint`) and
weights (:mod:`~camlens.models.weights`) both read these names.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: A checkpoint folder's state dict (safetensors) and its description (JSON).
WEIGHTS = "model.safetensors"
CONFIG = "camlens.json"


def demo_path() -> Path:
    """The folder of the bundled demo model and its sample images."""
    return Path(str(files("camlens") / "data" / "demo"))
