"""The Keras 3 adapter: TensorFlow, JAX and PyTorch backends, one code path.

camlens evaluates a Keras model itself, layer by layer, instead of building sub-models (which fail
on nested models with "Graph disconnected"). A ``Sequential`` or functional model, and every such
model nested inside it, is walked in its own execution order; a layer inside a nested model is
addressed by its path, ``"resnet50/conv5_block3_out"``. To explain a layer the model is evaluated
in two parts: one pass below and through the layer keeps every intermediate value, then the part
above the layer is a function of the layer's output alone (values that do not depend on the layer,
such as skip connections, come from the first pass), differentiated with ``tf.GradientTape``,
``jax.vjp`` or torch autograd: the target's score is computed in torch from the logits (any
``target``, callables included), and its gradient with respect to the logits is pulled back through
the framework (a vector-Jacobian product). Every layer is called with ``training=False``.

A final ``Dense(..., activation="softmax")`` (or ``"sigmoid"``, ``"log_softmax"``) is evaluated
without its activation, and a final ``Softmax``/``Activation("softmax")`` layer is skipped, so
scores are pre-softmax logits; the user's model is neither modified nor cloned. Results reach the
methods as float32 torch tensors, (B, C, h, w) (channels-last maps are transposed), zero-copy
through DLPack where the framework allows.

The walk of a model's graph and one evaluation live in :mod:`camlens.backends.keras_graph`, the
gradients on each backend in :mod:`camlens.backends.keras_autodiff`, and the loader of ``.keras``
files and ``keras:NAME`` specs in :mod:`camlens.models.keras`.
"""

from __future__ import annotations

import difflib
import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import keras
import numpy as np
import torch

from camlens import targets as targets_
from camlens.backends import keras_autodiff as autodiff
from camlens.backends.base import Capture, Head, LayerInfo, Layout, whole_output_refused
from camlens.backends.keras_graph import Graph, Pass, graph_of, is_model
from camlens.backends.torch_layers import EXCLUDED, layout_of
from camlens.errors import CamlensTypeError, CamlensValueError, describe

log = logging.getLogger("camlens")

_STATE: weakref.WeakKeyDictionary[Any, tuple[int, dict, dict]] = weakref.WeakKeyDictionary()


class KerasAdapter:
    """Adapter for a Keras 3 ``Sequential`` or functional model taking (B, H, W, C) inputs."""

    framework = "keras"

    def __init__(self, model: Any) -> None:
        if not isinstance(model, keras.Model):
            raise CamlensTypeError(f"model must be a keras.Model, got {describe(model)}")
        self.model = model
        # graphs and layer surveys live as long as the model (explainers are cheap to create)
        state = _STATE.get(model)
        if state is None or state[0] != len(model.layers):
            state = _STATE[model] = (len(model.layers), {}, {})
        self._graphs: dict[int, Graph | None] = state[1]
        self._surveys: dict[tuple[int, ...], tuple[list[LayerInfo], str | None]] = state[2]
        self.backend = keras.backend.backend()
        if self.backend not in ("tensorflow", "jax", "torch"):
            raise CamlensValueError(
                f"Keras backend {self.backend!r} is not supported; set KERAS_BACKEND to "
                "tensorflow, jax or torch"
            )
        if self.graph(model) is None:
            raise CamlensTypeError(
                f"Keras model {type(model).__name__} overrides call(); camlens explains "
                "Sequential and functional models (build yours with keras.Model(inputs, outputs))"
            )
        self.channels_last = keras.config.image_data_format() == "channels_last"
        self.channels = self._input_channels()

    def graph(self, model: Any) -> Graph | None:
        """The execution order of ``model`` (cached per model object)."""
        if id(model) not in self._graphs:
            self._graphs[id(model)] = graph_of(model)
        return self._graphs[id(model)]

    def _input_channels(self) -> int | None:
        try:
            shape = self.model.inputs[0].shape
        except (AttributeError, IndexError, ValueError, TypeError):
            return None
        return shape[-1 if self.channels_last else 1]

    @property
    def device(self) -> torch.device:
        """The CPU: canonical torch batches are taken and handed out there."""
        return torch.device("cpu")

    def outputs(self, x: Any) -> Any:
        """Refused: targets that read the model's whole output are for PyTorch models."""
        raise whole_output_refused("Keras")

    # ---------------------------------------------------------------- tensors
    def to_torch(self, value: Any) -> torch.Tensor:
        """A backend tensor as a torch tensor, sharing memory where DLPack allows."""
        if isinstance(value, torch.Tensor):
            return value.detach()
        try:
            return torch.from_dlpack(value)
        except (TypeError, RuntimeError, AttributeError, BufferError):
            return torch.from_numpy(np.array(keras.ops.convert_to_numpy(value)))

    def to_backend(self, tensor: torch.Tensor) -> Any:
        """A torch tensor as a tensor of the Keras backend."""
        if self.backend == "torch":
            return keras.ops.convert_to_tensor(tensor.detach())
        return keras.ops.convert_to_tensor(tensor.detach().cpu().numpy())

    def _is_canonical(self, x: Any) -> bool:
        """Whether a torch (B, C, H, W) batch was given to a channels-last model."""
        return (
            isinstance(x, torch.Tensor)
            and x.ndim == 4
            and self.channels_last
            and self.channels is not None
            and x.shape[1] == self.channels
            and x.shape[3] != self.channels
        )

    def native(self, x: Any) -> Any:
        """The model's input batch as a backend tensor in its own layout.

        ``x`` is (B, H, W, C) (channels-first models: (B, C, H, W)) as a numpy array or a backend
        tensor; a canonical torch (B, C, H, W) batch is accepted too and transposed.
        """
        if self._is_canonical(x):
            x = x.permute(0, 2, 3, 1)
        shape = getattr(x, "shape", None)
        layout = "(B, H, W, C)" if self.channels_last else "(B, C, H, W)"
        if shape is None:
            raise CamlensTypeError(
                f"expected x as an array or tensor of shape {layout}, got {describe(x)}"
            )
        if len(shape) != 4:
            hint = "; add a batch dimension with x[None]" if len(shape) == 3 else ""
            raise CamlensValueError(f"expected x of shape {layout}, got {tuple(shape)}{hint}")
        dtype = str(getattr(x, "dtype", ""))
        if "float" not in dtype:
            raise CamlensTypeError(
                f"expected x as a float array, got dtype {dtype}; scale images to floats "
                "(and apply the model's preprocess_input)"
            )
        if isinstance(x, torch.Tensor):
            x = x.detach()
            if self.backend != "torch":
                x = x.cpu().numpy()
        return keras.ops.convert_to_tensor(x, dtype=self.model.compute_dtype)

    def input_size(self, x: Any) -> tuple[int, int]:
        """The spatial size (H, W) of an input batch."""
        if self._is_canonical(x) or not self.channels_last:
            return int(x.shape[2]), int(x.shape[3])
        return int(x.shape[1]), int(x.shape[2])

    def as_tensor(self, x: Any) -> torch.Tensor:
        """The canonical (B, C, H, W) float32 torch view of an input batch."""
        return self._canonical(self.to_torch(self.native(x)), "input").float()

    def _canonical(self, tensor: torch.Tensor, name: str, size: tuple[int, int] | None = None):
        if name == "input":
            return tensor.permute(0, 3, 1, 2) if self.channels_last else tensor
        assert size is not None
        return self._layout(name, tuple(tensor.shape), size).to_nchw(tensor)

    def _layout(self, name: str, shape: tuple[int, ...], size: tuple[int, int]) -> Layout:
        layout = layout_of(shape, size) if len(shape) == 3 else None
        if len(shape) == 4:
            b, *rest = shape
            if self.channels_last:
                h, w, c = rest
                found = layout_of((b, c, h, w), size)
                layout = Layout("nhwc", found.grid) if found and found.kind == "nchw" else None
            else:
                found = layout_of(shape, size)
                layout = found if found and found.kind == "nchw" else None
        if layout is None:
            raise CamlensValueError(
                f"layer {name!r} outputs shape {shape}, not a spatial map (B, h, w, C) or a token "
                "sequence (B, tokens, C); pick an earlier layer (camlens.layers lists them)"
            )
        return layout

    # ---------------------------------------------------------------- gradients
    @contextmanager
    def _no_graph(self) -> Iterator[None]:
        """No autograd recording on the torch backend (the other backends record nothing)."""
        if self.backend == "torch":
            with torch.no_grad():
                yield
        else:
            yield

    def vjp(self, function: Callable[[Any], Any], value: Any) -> tuple[Any, Callable]:
        """``function(value)`` and its pullback: cotangent (torch) -> gradient (backend) or None."""
        return autodiff.vjp(self.backend, self.to_backend, function, value)

    def guided(self, function: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``function`` (a ReLU) with guided backpropagation's gradient
        (:func:`camlens.backends.keras_autodiff.guided`)."""
        return autodiff.guided(self.backend, function)

    # ---------------------------------------------------------------- layers
    def layers(self, x: Any) -> tuple[list[LayerInfo], str | None]:
        """The explainable layers for inputs shaped like ``x`` and the "auto" choice (cached).

        Names of layers inside nested models are paths, ``"resnet50/conv5_block3_out"``; a nested
        model and its last layer share one output, listed once under the inner layer's path.
        """
        native = self.native(x)
        key = tuple(native.shape[1:])
        if key not in self._surveys:
            size = self.input_size(x)
            run = Pass(self, trace=[])
            with self._no_graph():
                run.run(native[:1])
            assert run.trace is not None
            groups: dict[int, list[tuple[str, Any, Any]]] = {}
            for record in run.trace:
                groups.setdefault(id(record[2]), []).append(record)
            infos: list[LayerInfo] = []
            for members in groups.values():
                kind = type(members[0][1]).__name__
                shape = tuple(int(d) for d in members[0][2].shape)
                if EXCLUDED.search(kind) or kind == "InputLayer" or len(shape) not in (3, 4):
                    continue
                try:
                    layout = self._layout(members[0][0], shape, size)
                except CamlensValueError:
                    continue
                chosen = [m for m in members if run.counts[m[0]] == 1]
                if chosen:
                    infos.append(
                        LayerInfo(chosen[0][0], type(chosen[0][1]).__name__, shape, layout)
                    )
            self._surveys[key] = infos, (infos[-1].name if infos else None)
        return self._surveys[key]

    def _paths(self) -> dict[str, Any]:
        """Every layer by path, nested models' layers included."""
        found: dict[str, Any] = {}

        def walk(model: Any, prefix: str) -> None:
            graph = self.graph(model)
            assert graph is not None
            for step in graph.steps:
                path = prefix + step.name
                found.setdefault(path, step.op)
                if is_model(step.op) and self.graph(step.op) is not None:
                    walk(step.op, path + "/")

        walk(self.model, "")
        return found

    def resolve_layers(self, layer: Any, x: Any) -> list[str]:
        """Paths for ``layer``: "auto", a path ("resnet50/conv5_block3_out"), a layer, or a list."""
        if isinstance(layer, (list, tuple)):
            if not layer:
                raise CamlensValueError("layer must not be an empty list")
            return [name for item in layer for name in self.resolve_layers(item, x)]
        paths = self._paths()
        if isinstance(layer, keras.Operation):
            for path, op in paths.items():
                if op is layer:
                    return [path]
            raise CamlensValueError(
                f"layer {layer.name!r} is not a layer of the Keras model {self.model.name!r}; "
                "pass a layer of the explained model or its path"
            )
        if not isinstance(layer, str):
            raise CamlensTypeError(
                "layer must be 'auto', a layer path such as 'resnet50/conv5_block3_out', a "
                "keras layer or a list of them, got " + describe(layer)
            )
        if layer == "auto":
            _, auto = self.layers(x)
            if auto is None:
                raise CamlensValueError(
                    f"layer='auto' found no layer of {self.model.name!r} whose output is a "
                    "spatial map (B, h, w, C) with h*w > 1; pass layer=NAME"
                )
            log.info("layer='auto' resolved to %r", auto)
            return [auto]
        if layer not in paths:
            close = difflib.get_close_matches(layer, list(paths), n=5, cutoff=0.5)
            hint = f"close candidates: {', '.join(close)}" if close else "no close candidates"
            raise CamlensValueError(
                f"layer {layer!r} is not a layer of the Keras model {self.model.name!r}; {hint} "
                "(layers of nested models are written 'outer/inner'; camlens.layers(model, x) "
                "lists the explainable ones)"
            )
        return [layer]

    # ---------------------------------------------------------------- running
    def _finish_logits(self, run: Pass, output: Any) -> torch.Tensor:
        if run.stripped is not None:
            log.info("the model ends in %s; camlens explains the logits before it", run.stripped)
        logits = self.to_torch(output).float()
        return logits[:, None] if logits.ndim == 1 else logits

    def _above(self, native: Any, name: str, cache: Any) -> Callable[[Any], Any]:
        """The logits as a function of layer ``name``'s output alone (the rest from ``cache``)."""
        return lambda value: Pass(self, replace={name: value}, cache=cache).run(native)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits (N, K) of a canonical (N, C, H, W) torch batch, without any graph."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise CamlensValueError(f"expected a canonical (N, C, H, W) tensor, got {describe(x)}")
        native = self.to_backend(x.permute(0, 2, 3, 1) if self.channels_last else x)
        run = Pass(self)
        with self._no_graph():
            return self._finish_logits(run, run.run(native))

    def capture(
        self,
        x: Any,
        layers: Sequence[str],
        target: targets_.Target = None,
        *,
        gradients: bool = True,
        head: bool = False,
    ) -> Capture:
        """One pass keeping the layers' outputs and, with ``gradients``, one pass above each layer
        differentiated with respect to its output. Returns float32 (B, C, h, w) torch tensors."""
        native = self.native(x)
        size = self.input_size(x)
        layers = list(layers)
        first = Pass(self, keep=set(layers), store={} if gradients else None)
        with self._no_graph():
            output = first.run(native)
        missing = [name for name in layers if name not in first.kept]
        if missing:
            raise CamlensValueError(
                f"layer {missing[0]!r} did not run in the forward pass; pick a layer the model "
                "uses (camlens.layers(model, x) lists them)"
            )
        logits = self._finish_logits(first, output)
        resolved, scores, cot = autodiff.score_cotangent(logits, target)
        acts = [self.to_torch(first.kept[name]) for name in layers]
        grads: list[torch.Tensor] | None = None
        if gradients:
            grads = []
            for name in layers:
                _, pull = self.vjp(self._above(native, name, first.store), first.kept[name])
                found = pull(cot)
                if found is None:
                    raise CamlensValueError(
                        f"the explained score does not depend on layer {name!r}"
                    )
                grads.append(self.to_torch(found))
        head_record = None
        linear = first.head(output) if head else None
        if linear is not None:
            layer, features = linear
            weight = self.to_torch(keras.ops.convert_to_tensor(layer.kernel)).float().T
            bias = (
                torch.zeros(weight.shape[0], device=weight.device)
                if layer.bias is None
                else self.to_torch(keras.ops.convert_to_tensor(layer.bias)).float()
            )
            features = self.to_torch(features).float()
            head_record = Head(weight, bias, features.reshape(features.shape[0], -1))
        return Capture(
            activations=[self._canonical(a, name, size).float() for name, a in zip(layers, acts)],
            gradients=None
            if grads is None
            else [self._canonical(g, name, size).float() for name, g in zip(layers, grads)],
            logits=logits,
            target=resolved,
            scores=scores.cpu(),
            probs=targets_.probabilities(logits, resolved),
            head=head_record,
        )

    def input_gradients(
        self, x: Any, target: targets_.Target = None, guided: bool | str = False
    ) -> Capture:
        """Gradients of the target scores with respect to the input: ``activations`` is
        [canonical input (B, C, H, W)], ``gradients`` [d score / d input, canonical].
        ``guided``: guided backpropagation through the model's ReLUs (the deconvolution rule,
        ``"deconvolution"``, is refused: PyTorch models only)."""
        if not isinstance(guided, bool):
            raise CamlensValueError(
                f"guided={guided!r} (method 'deconvolution') is implemented for PyTorch models "
                "only; use method='guided-backprop' or 'saliency' for Keras models"
            )
        native = self.native(x)
        run = Pass(self, guided=guided)
        output, pull = self.vjp(run.run, native)
        logits = self._finish_logits(run, output)
        resolved, scores, cot = autodiff.score_cotangent(logits, target)
        found = pull(cot)
        gradient = torch.zeros(tuple(native.shape)) if found is None else self.to_torch(found)
        return Capture(
            activations=[self._canonical(self.to_torch(native), "input").float()],
            gradients=[self._canonical(gradient, "input").float()],
            logits=logits,
            target=resolved,
            scores=scores.cpu(),
            probs=targets_.probabilities(logits, resolved),
        )

    def infer(self, x: torch.Tensor, *, precision: str = "fp32") -> torch.Tensor:
        """Float32 logits (N, K) of a canonical batch for many-forward methods (Score-CAM).

        Keras models always run in their own compute dtype here (``bf16_ok`` is False).
        """
        return self.logits(x)

    def int8(
        self, calibration: torch.Tensor, *, reuse: bool = True
    ) -> AbstractContextManager[None]:
        """Refused: camlens quantizes PyTorch models only."""
        raise CamlensValueError(
            "precision='int8' needs a PyTorch model (it uses PyTorch's int8 kernels); run this "
            "Keras model with precision='fp32'"
        )

    def bf16_ok(self) -> bool:
        """Whether bfloat16 autocast is offered: never for Keras models."""
        return False

    def logits_above(
        self, x: Any, layer: str, activations: torch.Tensor, image: int = 0
    ) -> torch.Tensor:
        """Logits (N, K) with ``layer``'s output for image ``image`` of ``x`` replaced by each row
        of the canonical (N, C, h, w) ``activations`` (Ablation-CAM): :meth:`logits_from` on that
        one image, whose layers below run once."""
        native = self.native(x)
        return self.logits_from(native[image : image + 1], layer, activations)

    def logits_from(self, x: Any, layer: Any, activations: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) when ``layer``'s output is replaced by ``activations`` (N, C, h, w).

        ``x`` is the batch of B images the activations come from (N = B, or N = m·B with the m
        rows of each image consecutive); the part of the model above the layer is evaluated, with
        values that do not depend on the layer (skip connections) taken from a pass on ``x``.
        """
        native = self.native(x)
        size = self.input_size(x)
        names = self.resolve_layers(layer, x)
        if len(names) != 1:
            raise CamlensValueError(f"logits_from takes one layer, got {len(names)}: {names}")
        name = names[0]
        batch, rows = int(native.shape[0]), int(activations.shape[0])
        if rows % batch:
            raise CamlensValueError(
                f"activations have {rows} rows for {batch} images; expected a multiple of {batch}"
            )
        first = Pass(self, keep={name}, store={})
        with self._no_graph():
            first.run(native)
            shape = tuple(int(d) for d in first.kept[name].shape)
            layout = self._layout(name, shape, size)
            expected = tuple(layout.to_nchw(torch.empty(shape)).shape[1:])
            if layout.kind == "tokens" or tuple(activations.shape[1:]) != expected:
                raise CamlensValueError(
                    f"activations for layer {name!r} must have shape (N, *{expected}), got "
                    f"{tuple(activations.shape)}"
                )
            values = activations.permute(0, 2, 3, 1) if layout.kind == "nhwc" else activations
            above = Pass(
                self,
                replace={name: self.to_backend(values.contiguous())},
                cache=first.store,
                repeat=rows // batch,
            )
            return self._finish_logits(above, above.run(native))
