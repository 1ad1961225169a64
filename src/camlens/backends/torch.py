"""The PyTorch adapter: runs a model with per-call hooks and returns what the methods need.

Hooks live exactly one call (:mod:`camlens.backends.torch_hooks`); the model's train/eval flags
are restored and ``requires_grad`` flags are never touched. Gradients come from
``torch.autograd.grad`` with respect to the captured activations only. Reading the logits and the
linear head from a forward pass is :mod:`camlens.backends.torch_forward`'s; surveying the layers,
:mod:`camlens.backends.torch_layers`'.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn as nn

from camlens import targets as targets_
from camlens.backends.base import Capture, LayerInfo, Layout
from camlens.backends.guided import guided_relu
from camlens.backends.inputs import Inputs, check_tensor
from camlens.backends.quantize import GAP_WARNING, probability_gap, quantize_int8, run_int8
from camlens.backends.torch_forward import (
    before_softmax,
    detached,
    floats,
    head_record,
    linear_head,
    logits_of,
    watching,
)
from camlens.backends.torch_hooks import Keeper, gradients_of, hooked, hvps_of, math_sdpa, replacing
from camlens.backends.torch_layers import (
    declared_layer,
    detector_layers,
    layout_of,
    module_by_name,
    name_of,
    survey,
)
from camlens.errors import CamlensTypeError, CamlensValueError, CamlensWarning, describe

log = logging.getLogger("camlens")


@functools.cache
def cpu_bf16_is_fast() -> bool:
    """Whether this CPU multiplies bfloat16 matrices at least 1.5x faster than float32, measured
    once per process (about 30 ms). Flags do not tell: AMX tiles and AMD's AVX512-BF16 units run
    bf16 3-5x faster, an Intel AVX512-BF16 CPU without AMX measured half the float32 rate."""
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 512, 512, generator=generator)

    def seconds(dtype: torch.dtype) -> float:
        x, y = a.to(dtype), b.to(dtype)
        x @ y
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            x @ y
            best = min(best, time.perf_counter() - start)
        return best

    return seconds(torch.float32) >= 1.5 * seconds(torch.bfloat16)


class TorchAdapter:
    """Adapter for a ``torch.nn.Module`` taking (B, C, H, W) inputs."""

    framework = "torch"

    def __init__(self, model: nn.Module, *, weak: bool = False) -> None:
        """``weak=True`` holds the model by a weak reference (the per-model cache of
        :func:`camlens.backends.adapter_for`, so that the model can still be freed)."""
        if not isinstance(model, nn.Module):
            raise CamlensTypeError(f"model must be a torch.nn.Module, got {describe(model)}")
        self._model: Any = weakref.ref(model) if weak else (lambda: model)
        self._surveys: dict[tuple[int, ...], tuple[list[LayerInfo], str | None]] = {}
        self._warned_softmax = False
        self._broadcast: dict[tuple[str, tuple[int, ...]], bool] = {}
        self._int8: nn.Module | None = None
        self._int8_cache: tuple[tuple, nn.Module, float] | None = None
        self._structure: tuple[int, ...] = ()
        self.int8_gap = 0.0

    @property
    def model(self) -> nn.Module:
        model = self._model()
        if model is None:
            raise CamlensValueError("the model of this adapter has been freed")
        return model

    def _current(self) -> None:
        """Forget what was learnt about the model (layer surveys, the Ablation-CAM broadcast
        check, the int8 copy) when its modules changed since (a replaced head, say)."""
        structure = tuple(id(module) for module in self.model.modules())
        if structure != self._structure:
            self._structure = structure
            self._surveys.clear()
            self._broadcast.clear()
            self._int8_cache = None

    def _weights(self) -> tuple:
        """A fingerprint of the weights: storage and in-place version of every tensor, so any
        update (an optimizer step, ``load_state_dict``) changes it."""
        return tuple((t.data_ptr(), t._version) for t in self._tensors())

    # ---------------------------------------------------------------- introspection
    @property
    def device(self) -> torch.device:
        for tensor in self._tensors():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for tensor in self._tensors():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32

    def _tensors(self) -> Iterator[torch.Tensor]:
        yield from self.model.parameters()
        yield from self.model.buffers()

    def input_size(self, x: Any) -> tuple[int, ...]:
        """The spatial size (H, W) of an input batch ((T, H, W) for clips and volumes (B, C, T,
        H, W); its image's, for several inputs)."""
        return tuple(int(n) for n in x.shape[2:]) if x.ndim == 5 else (x.shape[-2], x.shape[-1])

    def prepare_inputs(self, x: Any) -> Any:
        """:meth:`prepare` for a tensor; for :class:`~camlens.backends.inputs.Inputs`, the image
        prepared and the other tensors moved to the model's device."""
        if isinstance(x, Inputs):
            return x.replace(self.prepare(x.image), self.device)
        return self.prepare(x)

    def _call(self, x: Any) -> Any:
        """The model on one input batch or on several inputs."""
        return x.call(self.model) if isinstance(x, Inputs) else self.model(x)

    def prepare(self, x: Any) -> torch.Tensor:
        """Check ``x`` is a float (B, C, H, W) or (B, C, T, H, W) tensor; move it to the model's
        device and dtype."""
        check_tensor(x)
        if x.is_inference():
            with torch.inference_mode(False):
                x = x.clone()
        return x.detach().to(device=self.device, dtype=self.dtype)

    def as_tensor(self, x: Any) -> torch.Tensor:
        """The canonical (B, C, H, W) float32 view of an input batch (its image for several
        inputs), on the model's device."""
        return self.prepare(x.image if isinstance(x, Inputs) else x).float()

    def module(self, name: str) -> nn.Module:
        return module_by_name(self.model, name)

    def layers(self, x: torch.Tensor) -> tuple[list[LayerInfo], str | None]:
        """The explainable layers for inputs shaped like ``x`` and the "auto" choice (cached)."""
        self._current()
        key = tuple(x.shape[1:])
        if key not in self._surveys:
            x = self.prepare_inputs(x)[:1]
            with self._explaining():
                self._surveys[key] = survey(self.model, x, logits_of)
        infos, auto = self._surveys[key]
        return infos, declared_layer(self.model, infos, auto)

    def resolve_layers(self, layer: Any, x: torch.Tensor) -> list[str]:
        """Names for ``layer``: "auto", a dotted name, a module, or a list of them."""
        if isinstance(layer, (list, tuple)):
            if not layer:
                raise CamlensValueError("layer must not be an empty list")
            names: list[str] = []
            for item in layer:
                names.extend(self.resolve_layers(item, x))
            return names
        if isinstance(layer, nn.Module):
            return [name_of(self.model, layer)]
        if not isinstance(layer, str):
            raise CamlensTypeError(
                "layer must be 'auto', a dotted module name, a module or a list of them, got "
                + describe(layer)
            )
        if layer == "auto":
            fused = detector_layers(self.model)
            if fused:
                log.info("layer='auto' resolved to the detector's feature maps %s", fused)
                return fused
            infos, auto = self.layers(x)
            if auto is None:
                raise CamlensValueError(
                    f"layer='auto' found no layer of {type(self.model).__name__} whose output is "
                    "a spatial map (B, C, h, w) with h*w > 1 or a token sequence; pass layer=NAME"
                )
            log.info("layer='auto' resolved to %r", auto)
            return [auto]
        self.module(layer)
        return [layer]

    # ---------------------------------------------------------------- running
    @contextmanager
    def _explaining(self) -> Iterator[None]:
        """Eval mode for the call, every module's train/eval flag restored afterwards."""
        modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        try:
            with torch.inference_mode(False):
                yield
        finally:
            for module, training in modes:
                module.training = training

    def _forward(
        self,
        x: torch.Tensor,
        watch_linear: bool = False,
        target: targets_.Target = None,
        whole: bool = False,
    ) -> tuple[Any, Any]:
        """Run the model; returns the logits (the input of a final Softmax) and the head record.

        For an :class:`~camlens.targets.OutputTarget` the model's whole output is returned as the
        logits (a detector's list of dicts, a segmentation model's dict) and no head is looked for;
        with ``whole``, also when the output holds no logit tensor (calls that do not know the
        target: the many forwards of Score-CAM, Ablation-CAM, SmoothGrad's reference).
        """
        if isinstance(target, targets_.OutputTarget):
            return self._call(x), None
        with watching(self.model, watch_linear) as seen:
            output = self._call(x)
        try:
            logits = logits_of(output)
        except CamlensTypeError:
            if whole:
                return output, None
            raise
        logits, softmax = before_softmax(logits, seen)
        if softmax is not None and not self._warned_softmax:
            warnings.warn(
                f"the model ends in {type(softmax).__name__} "
                f"({name_of(self.model, softmax)!r}); camlens explains its input, the "
                "pre-softmax logits",
                CamlensWarning,
                stacklevel=4,
            )
            self._warned_softmax = True
        return logits, linear_head(logits, seen)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for ``x`` without hooks or graph (perturbation methods), float32."""
        x = self.prepare(x)
        with self._explaining(), torch.no_grad():
            logits, _ = self._forward(x)
        return logits.float()

    def outputs(self, x: torch.Tensor) -> Any:
        """The model's whole output for ``x`` in eval mode, without hooks or graph (a detector's
        list of dicts, a segmentation model's dict)."""
        x = self.prepare_inputs(x)
        with self._explaining(), torch.no_grad():
            return self._call(x)

    def capture(
        self,
        x: torch.Tensor,
        layers: Sequence[str],
        target: targets_.Target = None,
        *,
        gradients: bool = True,
        head: bool = False,
        hvp: bool = False,
    ) -> Capture:
        """One forward pass with the layers hooked and, with ``gradients``, one backward pass.

        Activations and gradients are returned as float32 (B, C, h, w) on the model's device.
        ``hvp`` also keeps each layer's Hessian-vector product :math:`H A` in ``capture.hvps``
        (:math:`H = \\partial^2 y / \\partial A^2`; a double backward pass).
        """
        x = self.prepare_inputs(x)
        size = self.input_size(x)
        keeper = Keeper(layers, gradients)
        hooks = [(self.module(name), keeper.hook(index)) for index, name in enumerate(layers)]
        with self._explaining(), hooked(hooks), math_sdpa(hvp):
            with torch.no_grad():  # the first hook switches recording on
                logits, linear = self._forward(x, watch_linear=head, target=target)
                resolved = targets_.resolve(target, logits)
                score = targets_.scores(logits, resolved)
            activations = keeper.tensors()
            with torch.enable_grad():
                grads = gradients_of(score, activations, layers[0], hvp) if gradients else None
                hvps = hvps_of(grads, activations) if hvp and grads is not None else None
        layouts = [self._layout(name, a, size) for name, a in zip(layers, activations)]
        return Capture(
            activations=[lay.to_nchw(a.detach()).float() for lay, a in zip(layouts, activations)],
            gradients=None
            if grads is None
            else [lay.to_nchw(g.detach()).float() for lay, g in zip(layouts, grads)],
            logits=detached(logits),
            target=resolved,
            scores=score.detach().float().cpu(),
            probs=targets_.probabilities(logits, resolved),
            head=head_record(linear),
            hvps=None
            if hvps is None
            else [lay.to_nchw(h.detach()).float() for lay, h in zip(layouts, hvps)],
        )

    def _layout(self, name: str, tensor: torch.Tensor, size: tuple[int, ...]) -> Layout:
        layout = layout_of(tuple(tensor.shape), size)
        if layout is None:
            raise CamlensValueError(
                f"layer {name!r} outputs shape {tuple(tensor.shape)}, not a spatial map "
                "(B, C, h, w), (B, h, w, C) or a token sequence (B, tokens, C); pick an earlier "
                "layer (camlens layers lists them)"
            )
        return layout

    # ---------------------------------------------------------------- perturbation and pixel calls
    def native(self, x: torch.Tensor) -> torch.Tensor:
        """A canonical (B, C, H, W) batch as this adapter's native input (the same tensor)."""
        return x

    def input_gradients(
        self, x: torch.Tensor, target: targets_.Target = None, *, guided: bool | str = False
    ) -> Capture:
        """Gradients of the target scores with respect to the input, in one backward pass.

        The Capture's ``activations`` and ``gradients`` hold one (B, C, H, W) float32 tensor each:
        the input and d score / d input. ``guided`` backpropagates through every ReLU with
        :func:`camlens.backends.guided.guided_relu` (in this thread only); ``"deconvolution"``
        with its deconvolution rule.
        """
        if guided and type(self.model).__name__ == "UnflattenedModule":
            raise CamlensValueError(
                "guided backpropagation replaces the model's ReLU calls, which a torch.export "
                "program has compiled into its graph; use 'saliency' or 'gradcam', or the "
                "original nn.Module"
            )
        x = self.prepare_inputs(x)
        image = (x.image if isinstance(x, Inputs) else x).requires_grad_()
        relu = guided_relu("guided" if guided is True else guided) if guided else nullcontext()
        with self._explaining(), torch.enable_grad(), relu:
            logits, _ = self._forward(x, target=target)
            resolved = targets_.resolve(target, logits)
            score = targets_.scores(logits, resolved)
            if not score.requires_grad:
                raise CamlensValueError("the explained score does not depend on the input")
            (grad,) = torch.autograd.grad(score.sum(), image)
        return Capture(
            activations=[image.detach().float()],
            gradients=[grad.detach().float()],
            logits=detached(logits),
            target=resolved,
            scores=score.detach().float().cpu(),
            probs=targets_.probabilities(logits, resolved),
        )

    def infer(self, x: torch.Tensor, *, precision: str = "fp32") -> torch.Tensor:
        """Float32 logits (N, K) of a canonical batch for many-forward methods (Score-CAM).

        Runs under ``torch.inference_mode`` with no hooks (but on a final Softmax module, whose
        input is taken as the logits), the input in channels-last memory format;
        ``precision="bf16"`` runs under bfloat16 autocast on the model's device,
        ``precision="int8"`` the int8 copy made by :meth:`int8`.
        """
        if precision == "int8":
            if self._int8 is None:
                raise CamlensValueError("precision='int8' is only valid inside adapter.int8(...)")
            return logits_of(run_int8(self._int8, self.prepare(x))).float()
        x = self.prepare(x)
        x = x.contiguous(
            memory_format=torch.channels_last if x.ndim == 4 else torch.contiguous_format
        )
        device = x.device.type
        autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")
        with self._explaining(), torch.inference_mode(), autocast:
            logits, _ = self._forward(x, whole=True)
        return floats(logits)

    @contextmanager
    def int8(self, calibration: torch.Tensor, *, reuse: bool = True) -> Iterator[None]:
        """Within the block, ``infer(..., precision="int8")`` runs an int8 copy of the model
        calibrated on the canonical batch ``calibration`` (see :mod:`camlens.backends.quantize`).
        The copy is checked on that batch: ``int8_gap`` is the largest change of a class
        probability, and a CamlensWarning says when it exceeds ``GAP_WARNING``.

        The copy is kept (``reuse``): later calls with inputs of the same shape run it again
        without quantising, calibrated on the first call's inputs, until the model's modules or
        weights change. ``reuse=False`` makes a throw-away copy (a check on a blank input).
        """
        calibration = self.prepare(calibration)
        self._current()
        key = (self._weights(), tuple(calibration.shape[1:]), calibration.device)
        if reuse and self._int8_cache is not None and self._int8_cache[0] == key:
            _, self._int8, self.int8_gap = self._int8_cache
            try:
                yield
            finally:
                self._int8 = None
            return
        self._int8 = quantize_int8(self.model, calibration)
        try:
            exact = self.infer(calibration)
            self.int8_gap = probability_gap(exact, self.infer(calibration, precision="int8"))
            if reuse:
                self._int8_cache = (key, self._int8, self.int8_gap)
            log.info("precision='int8': probabilities within %.4f on calibration", self.int8_gap)
            if self.int8_gap > GAP_WARNING:
                warnings.warn(
                    f"precision='int8' moves {type(self.model).__name__}'s class probabilities "
                    f"by up to {self.int8_gap:.3f} on the calibration images (more than "
                    f"{GAP_WARNING}); the results are approximate: use precision='fp32' for "
                    "exact ones",
                    CamlensWarning,
                    stacklevel=4,
                )
            yield
        finally:
            self._int8 = None

    def bf16_ok(self) -> bool:
        """Whether bfloat16 autocast is fast on the model's device: CUDA with bf16, or a CPU whose
        bf16 matrix products run at least 1.5x its float32 rate (:func:`cpu_bf16_is_fast`)."""
        device = self.device
        if device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        if device.type == "cpu":
            return cpu_bf16_is_fast()
        return False

    def logits_above(
        self, x: torch.Tensor, layer: str, activations: torch.Tensor, image: int = 0
    ) -> torch.Tensor:
        """Logits (N, K) when ``layer``'s output for image ``image`` of ``x`` is replaced by each of
        the N canonical (N, C, h, w) ``activations`` in turn (Ablation-CAM).

        Only the network above the layer runs N times: the image goes through the layers below
        once and the layer's forward hook hands the rest of the network the N-row batch, which
        the layers above broadcast against anything of batch 1 coming from below (a skip around
        the layer). The first call per layer checks the trick against a plain forward; where it
        fails (a model mixing batch rows) the image is repeated N times instead.
        """
        self._current()
        x = self.prepare(x)[image : image + 1]
        module = self.module(layer)
        size = self.input_size(x)
        key = (layer, tuple(x.shape[1:]))
        if key not in self._broadcast:
            self._broadcast[key] = self._check_broadcast(x, module, layer, size, activations[:1])
        rows = x if self._broadcast[key] else x.expand(activations.shape[0], *x.shape[1:])
        logits, _ = self._replaced(rows, module, layer, size, activations)
        return logits

    def _replaced(
        self,
        x: torch.Tensor,
        module: nn.Module,
        layer: str,
        size: tuple[int, ...],
        activations: torch.Tensor,
        keep_original: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits with the layer's output replaced by ``activations`` (after the original one
        when ``keep_original``); also returns the original canonical output."""
        seen: list[torch.Tensor] = []
        hook = replacing(
            layer, lambda t: self._layout(layer, t, size), activations, keep_original, seen
        )
        with self._explaining(), torch.inference_mode(), hooked([(module, hook)]):
            logits, _ = self._forward(x, whole=True)
        return floats(logits), (seen[0] if seen else None)

    def _check_broadcast(
        self,
        x: torch.Tensor,
        module: nn.Module,
        layer: str,
        size: tuple[int, ...],
        probe: torch.Tensor,
    ) -> bool:
        """Whether running the layers below on one row and above on N rows gives plain logits."""
        try:
            logits, _ = self._replaced(x, module, layer, size, probe, keep_original=True)
        except (RuntimeError, ValueError, IndexError):
            return False
        if not isinstance(logits, torch.Tensor) or logits.shape[0] != 2:
            return False  # a whole output (a detector's): the image runs N times
        plain = self.logits(x)
        scale = float(plain.abs().max()) or 1.0
        return bool((logits[:1] - plain).abs().max() <= 1e-4 * scale)
