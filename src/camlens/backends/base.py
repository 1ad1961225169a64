"""The contract between methods and framework adapters.

Methods only talk to an adapter through these calls, and only receive torch tensors. Inputs are
"canonical" inside the methods: float32 torch tensors (B, C, H, W) on the model's device, whatever
layout the framework uses (a Keras adapter transposes its (B, H, W, C) batches).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from camlens import targets as targets_
from camlens.errors import CamlensTypeError, CamlensValueError
from camlens.targets import Target

#: The registered methods that run on an ONNX model: they need no gradient and no linear head.
ONNX_METHODS = (
    "eigencam",
    "scorecam",
    "ablationcam",
    "kpcacam",
    "sscam",
    "iscam",
    "reciprocam",
    "rise",
    "occlusion",
)


def whole_output_refused(framework: str) -> CamlensTypeError:
    """The error for a target that reads the whole output of a model that is not PyTorch's."""
    return CamlensTypeError(
        "targets that read the model's whole output (camlens.targets.segmentation, "
        f"detection) take PyTorch models; explain a {framework} model's logits with a class index"
    )


def onnx_gradient_error(what: str) -> CamlensValueError:
    """The error for ``what`` ("method 'gradcam'"), which needs gradients (or a linear head), on
    an ONNX model (:mod:`camlens.backends.onnx`)."""
    return CamlensValueError(
        f"{what} needs gradients, which camlens does not compute through an ONNX "
        f"model; methods that work on ONNX models: {', '.join(ONNX_METHODS)}"
    )


@dataclass(frozen=True)
class Layout:
    """How a layer's output maps to (B, C, h, w): ``kind`` is "nchw", "nhwc" or "tokens"; a clip's
    or volume's (B, C, t, h, w) is "ncthw" and stays as it is."""

    kind: str
    grid: tuple[int, ...]
    prefix: int = 0

    def to_nchw(self, tensor: torch.Tensor) -> torch.Tensor:
        """The output as (B, C, h, w): channels-last permuted, prefix tokens dropped."""
        if self.kind in ("nchw", "ncthw"):
            return tensor
        if self.kind == "nhwc":
            return tensor.permute(0, 3, 1, 2)
        tokens = tensor[:, self.prefix :, :]
        return tokens.transpose(1, 2).reshape(tensor.shape[0], -1, *self.grid)


@dataclass(frozen=True)
class LayerInfo:
    """One explainable layer: its name, module class, output shape and layout."""

    name: str
    kind: str
    shape: tuple[int, ...]
    layout: Layout


@dataclass
class Head:
    """The final linear layer: weight (K, C), bias (K,) and its input features (B, C), float32."""

    weight: torch.Tensor
    bias: torch.Tensor
    features: torch.Tensor


@dataclass
class Capture:
    """One forward (and backward) pass: per-layer activations and gradients as (B, C, h, w)."""

    activations: list[torch.Tensor]
    gradients: list[torch.Tensor] | None
    logits: Any  # (B, K) float32; the whole output for a targets.OutputTarget
    target: targets_.ResolvedTarget
    scores: torch.Tensor
    probs: torch.Tensor
    head: Head | None = None
    hvps: list[torch.Tensor] | None = None  # Hessian-vector products H A (ShapleyCAM)


class Adapter(Protocol):
    """What every framework adapter provides (see :class:`camlens.backends.torch.TorchAdapter`)."""

    framework: str

    @property
    def model(self) -> Any:
        """The wrapped model (explainer calls hold its lock: camlens.backends.locks)."""

    @property
    def device(self) -> torch.device:
        """The device of the canonical tensors the adapter hands out and takes."""

    def input_size(self, x: Any) -> tuple[int, ...]:
        """Spatial size (H, W) of a native input batch ((T, H, W) for clips and volumes)."""

    def as_tensor(self, x: Any) -> torch.Tensor:
        """A native input batch as a canonical float32 (B, C, H, W) torch tensor."""

    def layers(self, x: Any) -> tuple[list[LayerInfo], str | None]:
        """Explainable layers for inputs shaped like ``x`` and the "auto" choice."""

    def resolve_layers(self, layer: Any, x: Any) -> list[str]:
        """Layer names for "auto", a name, a layer object or a list of them."""

    def capture(
        self,
        x: Any,
        layers: list[str],
        target: Target = None,
        *,
        gradients: bool = True,
        head: bool = False,
    ) -> Any:
        """A :class:`~camlens.backends.torch.Capture`: activations and gradients (B, C, h, w)
        float32, logits, the resolved target, scores, probabilities, and the linear head."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits (N, K) of a canonical batch, without hooks or graph."""

    def outputs(self, x: Any) -> Any:
        """The model's whole output for a batch, without hooks or graph (a detector's list of
        dicts, a segmentation model's dict), for targets that read it
        (:class:`~camlens.targets.OutputTarget`)."""

    # Calls used by the perturbation and pixel-space methods (Score-CAM, Ablation-CAM, saliency,
    # guided backprop, SmoothGrad, Integrated Gradients). N is any number of rows, K classes.

    def native(self, x: torch.Tensor) -> Any:
        """A canonical float32 (N, C, H, W) torch tensor as a native input batch that ``capture``,
        ``input_gradients`` and ``logits_above`` accept (noisy or augmented copies of ``x``)."""

    def input_gradients(self, x: Any, target: Target = None, *, guided: bool | str = False) -> Any:
        """A Capture for the input itself: ``activations == [x]`` and ``gradients == [d score /
        d x]``, both canonical float32 (N, C, H, W) on the model's device, with logits (N, K),
        target, scores (N,) and probs (N,) as for ``capture``. ``guided=True``: every ReLU
        backpropagates only positive gradients at positive inputs (guided backpropagation), and the
        model is left exactly as it was, also after an exception. ``guided="deconvolution"``:
        every ReLU backpropagates only positive gradients, whatever its input (PyTorch models)."""

    def infer(self, x: torch.Tensor, *, precision: str = "fp32") -> torch.Tensor:
        """Float32 logits (N, K) of a canonical (N, C, H, W) batch without hooks or graph, for
        methods running many forwards; ``precision="bf16"`` may run under bfloat16 autocast,
        ``precision="int8"`` runs the copy made by :meth:`int8`."""

    def int8(
        self, calibration: torch.Tensor, *, reuse: bool = True
    ) -> AbstractContextManager[None]:
        """A block within which ``infer(..., precision="int8")`` runs an int8 copy of the model
        calibrated on the canonical batch ``calibration`` (kept for later calls on inputs of the
        same shape while the model is unchanged, unless ``reuse=False``); a clear error where
        there is none."""

    def bf16_ok(self) -> bool:
        """Whether ``infer(..., precision="bf16")`` is supported and fast on the model's device."""

    def logits_above(
        self, x: Any, layer: str, activations: torch.Tensor, image: int = 0
    ) -> torch.Tensor:
        """Float32 logits (N, K): the network from ``layer`` up, run with that layer's output for
        image ``image`` of the native batch ``x`` replaced by each row of ``activations``, a
        canonical (N, C, h, w) tensor shaped like ``capture``'s activations for that layer. The
        layers below ``layer`` should run once, not N times."""
