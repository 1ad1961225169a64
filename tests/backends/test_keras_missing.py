"""Without Keras 3 a Keras model or spec gets one message saying what to install."""

from __future__ import annotations

import sys

import pytest

from camlens.backends import adapter_for
from camlens.errors import CamlensValueError
from camlens.models import load_spec

MESSAGE = r"Keras models need keras 3 \(pip install keras tensorflow-cpu\)"


def test_adapter_for_a_keras_model_without_keras(monkeypatch):
    monkeypatch.setitem(sys.modules, "camlens.backends.keras", None)  # its import fails
    model = type("Functional", (), {"__module__": "keras.src.models.functional"})()
    with pytest.raises(CamlensValueError, match=MESSAGE):
        adapter_for(model)


def test_a_keras_spec_without_keras(monkeypatch):
    monkeypatch.setitem(sys.modules, "camlens.models.keras", None)
    with pytest.raises(CamlensValueError, match=MESSAGE):
        load_spec("keras:ResNet50")
