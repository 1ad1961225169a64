"""A ready session: everything a model spec means, resolved and checked once.

``Session.from_spec("torchvision:resnet50")`` loads the model (``DEFAULT`` weights for torchvision
and timm names, none otherwise), picks its preprocessing and input size, moves it to the device,
builds its adapter, probes its class count on a blank input and finds its class names. The command
line, the web server and the Ray workers all start from a session, so a spec means the same model,
input and targets everywhere. Everything that can be wrong with a request is found here, before any
image is read, as a :class:`~camlens.errors.CamlensError` (exit code 2 on the command line).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from camlens.backends import Adapter, adapter_for
from camlens.backends.base import LayerInfo
from camlens.backends.survey import layers as survey
from camlens.errors import CamlensTypeError, CamlensValueError, check_choice
from camlens.images.labels import class_name, load_labels
from camlens.images.pixels import resize_unit, to_device
from camlens.images.preprocessing import MODES, Preprocess, input_size, resolve
from camlens.methods._registry import applicable, get, methods, options_for
from camlens.methods.perturbation import PRECISIONS
from camlens.models import specs  # specs.load_spec looked up per call: it can be patched
from camlens.models.clip import read_prompts
from camlens.models.weights import seeded
from camlens.targets import several

#: ``--target`` words besides a class index or name.
PREDICTED, LABEL = "pred", "label"


def device_for(name: str) -> torch.device:
    """``auto`` (CUDA when torch sees a GPU, else the CPU) or a torch device name, checked: a GPU
    torch does not see (no CUDA, an index past the last GPU, no MPS) is refused by name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise CamlensValueError(
            f"--device {name!r} is not a device name; expected auto, cpu, cuda, cuda:1..."
        ) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CamlensValueError(
            f"--device {name} was asked for, but torch sees no CUDA GPU; use --device cpu"
        )
    if device.type == "cuda" and (device.index or 0) >= (count := torch.cuda.device_count()):
        raise CamlensValueError(
            f"--device {name}: torch sees {count} CUDA GPU(s) (cuda:0..cuda:{count - 1}); use "
            "one of them or --device cpu"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CamlensValueError(
            f"--device {name} was asked for, but torch sees no Apple GPU (MPS); use --device cpu"
        )
    return device


def actor_device(device: str, gpus: float) -> str:
    """The device of a Ray actor holding ``gpus`` GPUs (``--gpus-per-worker``) when ``--device``
    says ``device``: ``auto`` is the GPU Ray gives it (``cuda``: Ray shows it only its own), else
    the CPU; a device that contradicts ``gpus`` is refused."""
    kind = device.partition(":")[0]
    if kind == "cuda" and gpus <= 0:
        raise CamlensValueError(
            f"--device {device}: the Ray actors hold no GPU; pass --gpus-per-worker 1 (or more) "
            "or --device auto"
        )
    if kind == "cuda" and device != "cuda":
        raise CamlensValueError(
            f"--device {device}: a Ray actor sees only the GPU(s) Ray gives it; pass --device auto "
            "or cuda"
        )
    if kind == "cpu" and gpus > 0:
        raise CamlensValueError(
            f"--device {device}: the Ray actors would hold GPUs they never use; pass "
            "--gpus-per-worker 0 or --device auto"
        )
    if device == "auto":
        return "cuda" if gpus > 0 else "cpu"
    return device


def channels_last(network: Any, device: torch.device) -> Any:
    """A PyTorch CNN in channels-last memory format on a CPU or CUDA device: its convolutions
    run on (B, H, W, C) tensors (a ResNet-50 Grad-CAM pass costs 9% less CPU time, maps within
    6e-6 of the contiguous model's). Other models, a ViT with its one patch-embedding
    convolution among them, stay as they are. Only models a session loads itself are converted:
    a user's own module is never changed."""
    convolutions = (
        sum(isinstance(module, torch.nn.Conv2d) for module in network.modules())
        if isinstance(network, torch.nn.Module)
        else 0
    )
    if convolutions < 2 or device.type not in ("cpu", "cuda"):
        return network
    return network.to(memory_format=torch.channels_last)


def method_names(text: str | Sequence[str]) -> list[str]:
    """Registry names for ``"gradcam,cam"``, ``"all"`` or a list; duplicates dropped, order kept."""
    if isinstance(text, str):
        if text.strip() == "all":
            return methods()
        text = [name for name in text.split(",") if name.strip()]
    if not text:
        raise CamlensValueError("--method is empty; camlens methods lists the names")
    return list(dict.fromkeys(get(name.strip()).name for name in text))


@dataclass
class Session:
    """A model ready to explain: ``model``, its ``adapter``, ``prepare`` (a [0, 1] (B, 3, S, S)
    batch to the model's own input), the input side ``size``, class ``names`` (or None), the number
    of ``classes`` (2 for a one-logit head) and the ``device``. ``notes`` are things the user
    should check (a guessed input scale). ``progress``: the explainers it builds draw their own
    progress bars (Score-CAM's, on the command line; off by default)."""

    spec: str
    model: Any
    adapter: Adapter
    prepare: Preprocess
    size: int
    names: list[str] | None
    classes: int
    device: torch.device
    notes: list[str] = field(default_factory=list)
    weights: str | None = None
    seed: int = 0
    progress: bool = False
    _explainers: dict[tuple[str, str, str], Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_spec(
        cls,
        spec: str,
        weights: str | None = None,
        *,
        device: str = "auto",
        preprocess: str = "auto",
        size: int | None = None,
        labels: Any = None,
        trust_pickle: bool = False,
        seed: int = 0,
        prompts: str | Sequence[str] | None = None,
        network: Any = None,
    ) -> Session:
        """Load the model ``spec`` names (see :mod:`camlens.models.specs`) and resolve the rest.

        ``weights`` None means ``DEFAULT`` (download) for ``torchvision:``/``timm:`` names and
        random or built-in weights otherwise; ``labels`` is a file of class names or a list.
        Random weights are drawn from ``seed`` (the caller's random state is left as it was), so
        every process that loads the same spec and seed explains the same network. ``prompts``
        (a list, comma-separated text or a file, one a line) are the classes of an image-text
        model (``open_clip:ARCH``, ``hf:PATH_OR_NAME``). ``network``: the model ``spec`` and
        ``weights`` name, already loaded (a Ray actor's, shipped by the driver), not loaded again.
        """
        check_choice(preprocess, MODES, "--preprocess")  # before the (slow) model load
        where = device_for(device)
        names = (
            load_labels(labels)
            if isinstance(labels, (str, bytes)) or hasattr(labels, "__fspath__")
            else labels
        )
        if weights is None and spec.partition(":")[0] in ("torchvision", "timm"):
            weights = "DEFAULT"
        if network is None:
            with seeded(seed):
                network = specs.load_spec(
                    spec, weights, trust_pickle=trust_pickle, prompts=read_prompts(prompts)
                )
        prepare = resolve(preprocess, spec, network)
        network = channels_last(network, where)
        session = cls.from_model(
            network, spec=spec, prepare=prepare, size=size, names=names, device=where
        )
        session.weights, session.seed = weights, seed
        return session

    @classmethod
    def from_model(
        cls,
        model: Any,
        *,
        spec: str = "",
        prepare: Preprocess | None = None,
        size: int | None = None,
        names: Sequence[str] | None = None,
        device: torch.device | str | None = None,
    ) -> Session:
        """A session around a model object (a camlens ``Classifier`` gets its own [0, 1] input,
        size and labels; other models ImageNet normalisation unless ``prepare`` says otherwise)."""
        if isinstance(device, str):
            device = device_for(device)
        if device is not None and isinstance(model, torch.nn.Module):
            model = model.to(device)
        adapter = adapter_for(model)
        prepare = prepare or resolve("auto", spec, model)
        side = int(size) if size is not None else input_size(model)
        notes = [prepare.note] if prepare.note else []
        session = cls(spec, model, adapter, prepare, side, None, 0, torch.device("cpu"), notes)
        blank = prepare(torch.zeros(1, 3, side, side))  # canonical (B, C, H, W), as logits takes
        try:
            classes = int(adapter.logits(blank).shape[1])
        except CamlensTypeError:  # a detector's list of dicts: as many classes as names given
            classes = len(names) if names is not None else 0
        except RuntimeError as error:
            raise CamlensValueError(
                f"the model failed on a (1, 3, {side}, {side}) input: {error}; check --size and "
                "--preprocess"
            ) from error
        session.classes = 2 if classes == 1 else classes
        session.device = adapter.device
        if names is not None and len(names) != session.classes:
            session.notes.append(
                f"--labels has {len(names)} names, the model {session.classes} outputs"
            )
        known = list(names) if names is not None else specs.class_names(spec, model, classes)
        session.names = known
        return session

    # ------------------------------------------------------------------ inputs
    def native(self, unit: torch.Tensor) -> Any:
        """A [0, 1] (B, 3, S, S) batch as the model's input: on the session's device
        (:func:`~camlens.images.pixels.to_device`: pinned and copied asynchronously to a GPU),
        preprocessed there, channels-last for a Keras model."""
        x = self.prepare(to_device(unit, self.device))
        if getattr(self.adapter, "framework", "torch") == "keras":
            return x.permute(0, 2, 3, 1).contiguous()
        return x

    def to_input(self, images: Sequence[np.ndarray]) -> Any:
        """Whole uint8 RGB images, each resized to ``size`` x ``size``, as the model's input."""
        return self.native(torch.stack([resize_unit(image, self.size) for image in images]))

    def layers(self) -> tuple[list[LayerInfo], str | None]:
        """The model's explainable layers with their output shapes at the session's input (its
        ``size``, its preprocessing), and the "auto" choice: what ``camlens layers`` prints and
        ``camlens serve`` offers."""
        return survey(self.adapter, self.native(torch.zeros(1, 3, self.size, self.size)))

    def name(self, index: int) -> str:
        """Class ``index``'s name, or the index as text."""
        return class_name(self.names, index)

    # ------------------------------------------------------------------ requests
    def target(self, text: str | int | None) -> int | str | None:
        """``--target``: "pred" (None: the predicted class), "label" (the true class, from the
        folder layout), a class index or a class name (case-insensitive); "topK" and "above:P"
        (several classes per image) and "output:K" (the K-th output value of a model that is not
        a classifier) are returned as they are, checked (:mod:`camlens.targets.several`)."""
        if text is None or text == PREDICTED:
            return None
        if text == LABEL:
            return LABEL
        if isinstance(text, str) and several.word(text):
            return several.checked(text, self.classes)
        try:
            index = int(text)
        except ValueError:
            names = self.names or []
            lookup = {name.lower(): i for i, name in reversed(list(enumerate(names)))}
            if str(text).lower() in lookup:
                return lookup[str(text).lower()]
            close = difflib.get_close_matches(str(text), names, n=5)
            hint = f"; close names: {', '.join(close)}" if close else ""
            known = "" if names else " (no class names known: pass --labels FILE)"
            raise CamlensValueError(
                f"--target {text!r} is not 'pred', 'label', a class index or a class name"
                f"{known}{hint}"
            ) from None
        if not 0 <= index < self.classes:
            raise CamlensValueError(
                f"--target {index} is out of range: the model has {self.classes} classes "
                f"(0..{self.classes - 1})"
            )
        return index

    def usable(self, methods: Sequence[str]) -> list[str]:
        """``methods`` to run on this model: for ``--method all``, those that do not apply to it
        (the attention methods on a CNN, gradient methods on an ONNX model) are dropped, with a
        note naming them."""
        kept, skipped = applicable(list(methods), self.adapter)
        if skipped and self.adapter.framework == "onnx":
            self.notes.append(
                f"--method all skips {', '.join(skipped)}: they need gradients (or a PyTorch "
                "model's attention layers), which an ONNX model does not give camlens"
            )
        elif skipped:
            self.notes.append(
                f"--method all skips {', '.join(skipped)}: they read a vision transformer's "
                f"attention layers, which {type(self.model).__name__} does not have"
            )
        return kept

    def check(self, methods: Sequence[str], layer: Any = "auto", precision: str = "auto") -> None:
        """Raise a CamlensError now if ``methods`` cannot run at ``layer`` with ``precision``
        (an unknown layer, a TorchScript model for a layer method, int8 on an unsupported model)."""
        check_choice(precision, PRECISIONS, "--precision")
        blank = self.native(torch.zeros(1, 3, self.size, self.size))
        if precision == "bf16" and self.adapter.framework == "onnx":
            self.adapter.infer(self.adapter.as_tensor(blank), precision=precision)  # refused
        if precision == "int8" and any(get(m).int8_forwards for m in methods):
            with warnings.catch_warnings():  # a check on a blank image: its gap means nothing
                warnings.simplefilter("ignore")
                with self.adapter.int8(self.adapter.as_tensor(blank), reuse=False):
                    pass
        layered = [m for m in methods if get(m).uses_layer]
        if not layered:
            return
        try:
            self.adapter.resolve_layers(layer, blank)
        except RuntimeError as error:
            if "ScriptModule" not in str(error):
                raise CamlensValueError(f"the model failed on a blank input: {error}") from error
            raise CamlensValueError(
                f"{self.spec} is a TorchScript model, which takes no hooks, so layer methods "
                f"({', '.join(layered)}) cannot see inside it; load the Python model instead "
                "(torchvision:NAME or package.module:factory with --weights FILE)"
            ) from error

    def explainer(self, method: str, layer: Any = "auto", precision: str = "auto") -> Any:
        """The reusable explainer for ``method`` at ``layer`` (one per session and setting)."""
        key = (method, repr(layer), precision)
        if key not in self._explainers:
            self._explainers[key] = get(method)(
                self.adapter,
                layer=layer,
                **options_for(method, precision=precision, progress=self.progress),
            )
        return self._explainers[key]

    def predict(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted classes (B,) and their probabilities (B,) on the CPU (sigmoid for a
        one-logit head)."""
        with torch.no_grad():
            logits = self.adapter.logits(self.adapter.as_tensor(x)).float()
        if logits.shape[1] == 1:
            return (logits[:, 0] > 0).long().cpu(), torch.sigmoid(logits[:, 0].abs()).cpu()
        probability, predicted = logits.softmax(dim=1).max(dim=1)
        return predicted.cpu(), probability.cpu()
