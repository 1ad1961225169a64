"""Model specs for the command line, and the class names that go with them.

A spec is one of:

- ``torchvision:NAME`` (weights: ``DEFAULT`` downloads, ``none`` random, or a local ``.pth``),
- ``timm:NAME`` (same weights choices),
- a TorchScript file (``torch.jit.save``; deprecated in torch 2.14),
- a ``torch.export`` program (``.pt2``, ``torch.export.save``), explained through its unflattened
  modules (``torch.export.unflatten``): the original layer names and hooks work; its batch
  dimension must be dynamic, and methods that patch calls (guided backpropagation) or read a
  linear head (CAM) cannot apply to its compiled graph,
- a full pickled ``nn.Module`` saved with ``torch.save(model)`` (only with ``trust_pickle=True``:
  unpickling runs code from the file),
- a camlens checkpoint folder (``model.safetensors`` + ``camlens.json``), ``demo`` or ``demo-vit``,
- a ``.keras`` file or ``keras:NAME`` (the Keras backend),
- an ``.onnx`` file (ONNX Runtime, :mod:`camlens.backends.onnx`; gradient-free methods only),
- ``package.module:factory``: a function called with no arguments that returns the model,
- ``open_clip:ARCH`` or ``hf:PATH_OR_NAME``: an image-text model (CLIP) as a zero-shot classifier
  of text ``prompts`` (see :mod:`camlens.models.clip`).
"""

from __future__ import annotations

import importlib
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camlens.backends import keras_missing, load_onnx
from camlens.errors import CamlensValueError
from camlens.images.labels import imagenet_classes
from camlens.models import clip
from camlens.models.checkpoint import load_model
from camlens.models.files import BUNDLED
from camlens.models.weights import is_random, load_state, timm_model, torchvision_model

#: torch.load(weights_only=True) refuses a pickle that holds more than tensors with REFUSED, and
#: bytes that are no pickle at all with FOREIGN; its reason follows DETAIL.
REFUSED, FOREIGN = "Weights only load failed", "Unsupported operand"
DETAIL = "WeightsUnpickler error:"
#: What torch.load raises for a file it cannot read: damaged zip, truncated or foreign bytes.
LOAD_ERRORS = (RuntimeError, OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError)
FORMS = (
    "torchvision:NAME, timm:NAME, a torch.export .pt2 file, a TorchScript file, a camlens "
    "checkpoint folder or 'demo', "
    "a .keras file, keras:NAME, an .onnx file, open_clip:ARCH, hf:PATH_OR_NAME, or "
    "package.module:factory"
)


def kind_of(spec: str) -> str:
    """Which loader a spec goes to: torchvision, timm, keras, onnx, clip, checkpoint, file or
    factory."""
    path = Path(spec)
    if spec in BUNDLED or (path.is_dir() and (path / "camlens.json").is_file()):
        return "checkpoint"
    if spec.startswith("keras:") or spec.lower().endswith(".keras"):
        return "keras"
    if spec.lower().endswith(".onnx"):
        return "onnx"
    prefix, sep, name = spec.partition(":")
    if prefix in ("torchvision", "timm"):
        return prefix
    if prefix in clip.PREFIXES:
        return "clip"
    if path.is_file():
        return "file"
    if sep and name and all(part.isidentifier() for part in prefix.split(".")):
        return "factory"
    if path.is_dir():
        raise CamlensValueError(
            f"model spec {spec!r} is a folder without camlens.json; a camlens checkpoint folder "
            "holds model.safetensors and camlens.json (camlens train writes one)"
        )
    raise CamlensValueError(f"unknown model spec {spec!r}; expected {FORMS}")


def load_spec(
    spec: str,
    weights: str | None = None,
    *,
    trust_pickle: bool = False,
    prompts: Sequence[str] | None = None,
) -> Any:
    """Build the model a spec names, in eval mode.

    ``weights``: None or "none" (random), "DEFAULT" (download the pretrained weights) or a local
    state-dict file (loaded with ``weights_only=True``). ``trust_pickle`` allows a spec file that
    is a whole pickled model (unpickling can run arbitrary code: only for files you trust).
    ``prompts``: the classes of an image-text model (``open_clip:``, ``hf:``), only for those.
    """
    if not isinstance(spec, str) or not spec:
        raise CamlensValueError(f"model spec must be a non-empty string, got {spec!r}")
    kind = kind_of(spec)
    if kind == "clip":
        return clip.load(spec, weights, prompts)
    if prompts is not None:
        raise CamlensValueError(
            f"--prompts names the classes of an image-text model (open_clip:ARCH or "
            f"hf:PATH_OR_NAME); {spec!r} has its own classes (--labels names them)"
        )
    if kind == "checkpoint":
        return load_model(spec)
    if kind == "keras":
        try:
            from camlens.models import keras as keras_models
        except ImportError as error:
            raise keras_missing() from error
        return keras_models.load_spec(spec, weights)
    if kind == "onnx":
        return load_onnx(spec, weights)
    if kind == "torchvision":
        return torchvision_model(spec.partition(":")[2], weights)
    if kind == "timm":
        return timm_model(spec.partition(":")[2], weights)
    if kind == "file":
        return _file(Path(spec), weights, trust_pickle)
    return _factory(spec, weights)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def _is_exported(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("archive_format") for n in archive.namelist())


def load_exported(path: Path) -> Any:
    """A ``torch.export`` program as an explainable module: ``torch.export.unflatten`` gives back
    the original module tree (names, hooks); the batch dimension must be dynamic, since camlens
    surveys layers on one image and explains batches of any size."""
    import torch

    program = torch.export.load(str(path))
    nodes = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    user = program.graph_signature.user_inputs
    value = nodes[user[0]].meta.get("val") if user and user[0] in nodes else None
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) and isinstance(shape[0], int):
        raise CamlensValueError(
            f"model file {str(path)!r} is a torch.export program for batches of exactly "
            f"{shape[0]} (input shape {tuple(shape)}); camlens runs other batch sizes, so "
            "re-export it with a dynamic batch: torch.export.export(model, (x,), "
            "dynamic_shapes=({0: torch.export.Dim('batch')},))"
        )
    return torch.export.unflatten(program)


def _file(path: Path, weights: str | None, trust_pickle: bool) -> Any:
    import torch

    if _is_exported(path):
        model = load_exported(path)
        return model.eval() if is_random(weights) else load_state(model, weights)
    if _is_torchscript(path):
        model = torch.jit.load(str(path), map_location="cpu")
        return model if is_random(weights) else load_state(model, weights)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if REFUSED not in str(error) or FOREIGN in str(error):
            raise _unreadable(path, error) from error
        if not trust_pickle:
            raise CamlensValueError(
                f"model file {str(path)!r} is a full pickle, which can run code when loaded; "
                "pass --trust-pickle if you trust it, or save a TorchScript file "
                "(torch.jit.script(model).save(path)) or a state dict with --model "
                "torchvision:NAME --weights FILE"
            ) from error
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=False)
        except (*LOAD_ERRORS, AttributeError, ImportError) as error:  # a class it cannot find
            raise _unreadable(path, error) from error
    except LOAD_ERRORS as error:
        raise _unreadable(path, error) from error
    if isinstance(loaded, torch.nn.Module):
        return loaded.eval() if is_random(weights) else load_state(loaded, weights)
    raise CamlensValueError(
        f"model file {str(path)!r} holds a {type(loaded).__name__} (weights without an "
        "architecture); pass the architecture as the spec and the file as weights: "
        f"--model torchvision:NAME --weights {path}"
    )


def _unreadable(path: Path, error: BaseException) -> CamlensValueError:
    """A model file torch cannot read, with torch's own reason (its first line after DETAIL)."""
    lines = [line.strip() for line in str(error).rpartition(DETAIL)[2].splitlines()]
    reason = next((line for line in lines if line), "")[:200]
    cause = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
    return CamlensValueError(
        f"model file {str(path)!r} cannot be loaded by torch ({cause}); is the file complete? "
        "save it again with torch.save, torch.jit.save or torch.export.save"
    )


def _factory(spec: str, weights: str | None) -> Any:
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CamlensValueError(
            f"model spec {spec!r}: cannot import {module_name!r} ({error}); expected {FORMS}"
        ) from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise CamlensValueError(f"model spec {spec!r}: {module_name} has no callable {attribute!r}")
    model = factory()
    if hasattr(model, "eval"):
        model.eval()
    return model if is_random(weights) else load_state(model, weights)


def class_names(spec: str, model: Any, classes: int | None = None) -> list[str] | None:
    """Class names for a model: its own (``labels``, ``class_names`` or ``classes``), ImageNet's
    for a torchvision or timm ImageNet model, or None when unknown."""
    for attribute in ("labels", "class_names", "classes"):
        names = getattr(model, attribute, None)
        if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
            return list(names)
    kind = spec.partition(":")[0]
    if kind == "timm":
        try:
            from timm.data import ImageNetInfo, infer_imagenet_subset

            subset = infer_imagenet_subset(model)
            if subset:
                info = ImageNetInfo(subset)
                return [
                    info.index_to_description(i).split(",")[0] for i in range(info.num_classes())
                ]
        except (ImportError, AttributeError, ValueError):
            pass
    if kind in ("torchvision", "timm") and classes in (None, 1000):
        names = imagenet_classes()
        return list(names) if names else None
    return None
