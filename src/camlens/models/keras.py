"""Keras models from a spec: a ``.keras`` file, or ``keras:NAME`` from ``keras.applications``.

Keras is optional (``pip install keras tensorflow-cpu``): this module imports it at its top, so
:func:`camlens.models.specs.load_spec` imports this module only for a Keras spec.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import keras

from camlens.errors import CamlensValueError


def load_spec(spec: str, weights: str | None = None) -> Any:
    """A Keras model from a spec: a ``.keras`` file, or ``keras:NAME`` from keras.applications.

    ``weights`` (``keras:NAME`` only): None/"none" (random), "DEFAULT"/"imagenet" (download) or a
    local weights file.
    """
    kind, _, name = spec.partition(":")
    if kind != "keras":
        return _file(spec)
    available = sorted(
        n
        for n in dir(keras.applications)
        if n[:1].isupper() and callable(getattr(keras.applications, n))
    )
    if name not in available:
        close = difflib.get_close_matches(name, available, n=5)
        raise CamlensValueError(
            f"keras.applications has no model {name!r}"
            + (f"; close names: {', '.join(close)}" if close else "; e.g. keras:ResNet50")
        )
    chosen = _weights(weights)
    try:
        return getattr(keras.applications, name)(weights=chosen)
    except OSError as error:  # a failed download
        raise CamlensValueError(
            f"could not load the {chosen} weights of {name} ({error}); offline, pass a local "
            "weights file: --weights path/to/weights.h5"
        ) from error


def _file(spec: str) -> Any:
    """A saved ``.keras`` (or ``.h5``) model, without its training configuration."""
    path = Path(spec)
    if path.suffix not in (".keras", ".h5"):
        raise CamlensValueError(
            f"unknown Keras model spec {spec!r}; expected a .keras file or keras:NAME "
            "(e.g. keras:ResNet50)"
        )
    if not path.is_file():
        raise CamlensValueError(f"Keras model file {spec!r} does not exist")
    return keras.saving.load_model(path, compile=False)


def _weights(weights: str | None) -> str | None:
    """What ``keras.applications.NAME(weights=...)`` takes for ``--weights``."""
    if weights in (None, "none", "None"):
        return None
    if weights in ("DEFAULT", "imagenet"):
        return "imagenet"
    if Path(weights).is_file():
        return weights
    raise CamlensValueError(
        f"weights {weights!r} is neither 'DEFAULT', 'imagenet', 'none' nor an existing file"
    )
