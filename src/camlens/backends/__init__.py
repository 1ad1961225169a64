"""Framework adapters: the only code that knows a framework.

An adapter runs a model with per-call hooks and hands the methods torch tensors: the explained
layer's activations (B, C, h, w), the gradients of the target scores with respect to them, the
logits, and the linear head's weights for CAM.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any, cast

from camlens.backends.base import Adapter, Capture, Head
from camlens.backends.torch import TorchAdapter
from camlens.errors import CamlensTypeError, CamlensValueError, describe

#: One adapter per PyTorch model, held weakly: one-shot calls (``camlens.explain``) share its
#: layer surveys and int8 copy, and the model can still be freed.
_ADAPTERS: weakref.WeakKeyDictionary[Any, TorchAdapter] = weakref.WeakKeyDictionary()


def keras_missing() -> CamlensValueError:
    """The error for a Keras model or spec when Keras 3 cannot be imported."""
    return CamlensValueError("Keras models need keras 3 (pip install keras tensorflow-cpu)")


def load_onnx(path: Any, weights: str | None = None) -> Adapter:
    """An ``.onnx`` file (path, bytes or ``onnx.ModelProto``) as a
    :class:`camlens.backends.onnx.OnnxModel`; a clear error without the onnx extra."""
    try:
        from camlens.backends import onnx as onnx_backend
    except ImportError as error:
        raise CamlensValueError(
            f"ONNX models need onnx and onnxruntime (pip install 'camlens[onnx]'): {error}"
        ) from error
    return onnx_backend.load(path, weights)


def unwrap(model: Any) -> Any:
    """The network inside an ultralytics ``YOLO`` object (its ``.model``): the wrapper's
    ``train()``, which ``nn.Module.eval()`` calls, starts training, so camlens never touches it."""
    engine = sys.modules.get("ultralytics.engine.model")
    if engine is not None and isinstance(model, engine.Model):
        return model.model
    return model


def adapter_for(model: Any) -> Adapter:
    """The adapter for ``model``: a ``torch.nn.Module`` (the same adapter for every call on the
    same model), (Keras installed) a Keras model, an ``onnx.ModelProto``, or an adapter (such as
    ``camlens.load_model("model.onnx")``), returned as it is."""
    import torch.nn as nn

    if hasattr(model, "capture") and hasattr(model, "resolve_layers"):
        return cast(Adapter, model)  # already an adapter: share it (and its cached layer survey)
    module = type(model).__module__
    keras = sys.modules.get("keras")  # subclassed Keras models live in the user's modules
    if module.startswith(("keras", "tf_keras", "tensorflow")) or (
        keras is not None and isinstance(model, keras.Model)
    ):  # before nn.Module: on the torch backend a Keras model is an nn.Module too
        try:
            from camlens.backends import keras as keras_backend
        except ImportError as error:
            raise keras_missing() from error
        return keras_backend.KerasAdapter(model)
    onnx = sys.modules.get("onnx")
    if onnx is not None and isinstance(model, onnx.ModelProto):
        return load_onnx(model)
    if isinstance(model, nn.Module):
        model = unwrap(model)
        adapter = _ADAPTERS.get(model)
        if adapter is None:
            adapter = _ADAPTERS[model] = TorchAdapter(model, weak=True)
        return adapter
    raise CamlensTypeError(
        "model must be a torch.nn.Module, a keras.Model or an ONNX model "
        "(camlens.load_model('model.onnx')), got " + describe(model)
    )


__all__ = ["Adapter", "Capture", "Head", "TorchAdapter", "adapter_for"]
