"""Listing the layers of a model that can be explained."""

from __future__ import annotations

from typing import Any

from camlens.backends import adapter_for
from camlens.backends.base import LayerInfo
from camlens.backends.inputs import as_inputs
from camlens.backends.locks import model_lock


def layers(model: Any, x: Any) -> tuple[list[LayerInfo], str | None]:
    """The explainable layers of ``model`` for inputs shaped like ``x`` (a tuple or dict of
    inputs too), and the "auto" choice.

    Each :class:`LayerInfo` has the layer's dotted ``name``, module ``kind``, output ``shape`` for
    one image and ``layout`` ("nchw", "nhwc" or "tokens" with its grid).
    """
    adapter = adapter_for(model)
    with model_lock(adapter.model):
        return adapter.layers(as_inputs(x))
