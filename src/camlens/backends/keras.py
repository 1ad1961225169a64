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
"""

from __future__ import annotations

import difflib
import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camlens import targets as targets_
from camlens.backends.base import Capture, Head, LayerInfo, Layout
from camlens.backends.torch_layers import EXCLUDED, layout_of
from camlens.errors import CamlensTypeError, CamlensValueError, describe

log = logging.getLogger("camlens")

#: Output activations turned into logits: the final layer is evaluated without them.
PROBABILITIES = ("softmax", "sigmoid", "log_softmax")
#: Backends on which ``guided=True`` (guided backpropagation) is implemented.
GUIDED_BACKENDS = ("tensorflow", "torch", "jax")

_STATE: weakref.WeakKeyDictionary[Any, tuple[int, dict, dict]] = weakref.WeakKeyDictionary()


def _keras() -> Any:
    try:
        import keras
    except ImportError as error:  # pragma: no cover - only without keras installed
        raise CamlensValueError(
            "Keras models need keras 3 (pip install keras tensorflow-cpu)"
        ) from error
    return keras


def _activation_name(function: Any) -> str:
    return getattr(function, "__name__", "") if callable(function) else ""


# ---------------------------------------------------------------------------- model graphs
@dataclass
class _Step:
    """One call in a model's execution order: an operation reading and writing tensor ids."""

    name: str
    op: Any
    inputs: list[int]
    outputs: list[int]
    node: Any = None  # the functional node, whose arguments place the values; None: one input


@dataclass
class _Graph:
    input: int
    output: int
    steps: list[_Step]


def _graph(model: Any) -> _Graph | None:
    """The execution order of a ``Sequential`` or functional model; None for other layers."""
    from keras.src.models.functional import Functional
    from keras.src.models.sequential import Sequential

    if isinstance(model, Sequential) and type(model).call is Sequential.call:
        layers = list(model.layers)
        steps = [_Step(layer.name, layer, [i], [i + 1]) for i, layer in enumerate(layers)]
        return _Graph(0, len(layers), steps)
    if isinstance(model, Functional) and type(model).call is Functional.call:
        if len(model.inputs) != 1:
            raise CamlensValueError(
                f"Keras model {model.name!r} takes {len(model.inputs)} inputs; camlens explains "
                "models with one image input"
            )
        steps = []
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.operation is None or node.is_input:
                    continue
                steps.append(
                    _Step(
                        node.operation.name,
                        node.operation,
                        [id(t) for t in node.input_tensors],
                        [id(t) for t in node.outputs],
                        node,
                    )
                )
        return _Graph(id(model.inputs[0]), id(model.outputs[0]), steps)
    return None


# ---------------------------------------------------------------------------- one evaluation
@dataclass
class _Pass:
    """One evaluation of the model, with the layers to keep, replace or take from a cache.

    ``replace`` substitutes a layer's output; with ``cache`` (the ``store`` of an earlier pass on
    the same input) every call that does not depend on a replaced output is read, not computed.
    ``repeat`` > 1: replaced outputs have ``repeat`` rows per input row (image-major).
    """

    adapter: KerasAdapter
    keep: set[str] = field(default_factory=set)
    replace: dict[str, Any] = field(default_factory=dict)
    cache: dict[tuple[str, int], list[Any]] | None = None
    store: dict[tuple[str, int], list[Any]] | None = None
    repeat: int = 1
    guided: bool = False
    strip: bool = True
    trace: list[tuple[str, Any, Any]] | None = None
    kept: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    dense: tuple[Any, Any, Any] | None = None  # (Dense layer, its input, its pre-activation)
    stripped: str | None = None

    def run(self, x: Any) -> Any:
        return self._model(self.adapter.model, "", x, False, final=True)[0]

    def head(self, logits: Any) -> tuple[Any, Any] | None:
        """The Dense layer producing ``logits`` and its input, if one does."""
        if self.dense is not None and self.dense[2] is logits:
            return self.dense[0], self.dense[1]
        return None

    def _model(self, model: Any, prefix: str, x: Any, tainted: bool, final: bool) -> Any:
        graph = self.adapter.graph(model)
        assert graph is not None  # only models with a graph are entered
        values: dict[int, Any] = {graph.input: x}
        dirty: set[int] = {graph.input} if tainted else set()
        for step in graph.steps:
            if any(i not in values for i in step.inputs):
                continue
            path = prefix + step.name
            count = self.counts.get(path, 0)
            self.counts[path] = count + 1
            if count and (path in self.keep or path in self.replace):
                raise CamlensValueError(
                    f"layer {path!r} runs more than once in a forward pass; pick a layer that "
                    "runs once (camlens.layers(model, x) lists them)"
                )
            is_dirty = any(i in dirty for i in step.inputs)
            is_final = final and graph.output in step.outputs
            sub = self.adapter.graph(step.op) if _is_model(step.op) else None
            if sub is not None:
                arg = self._arguments(step, values, dirty, is_dirty)[0][0]
                outputs, is_dirty = self._model(step.op, path + "/", arg, is_dirty, is_final)
                outputs = [outputs]
            elif not is_dirty and self.cache is not None:
                outputs = self.cache[(path, count)]
            else:
                args, kwargs = self._arguments(step, values, dirty, is_dirty)
                outputs = _flatten(self._call(step.op, args, kwargs, is_final))
            if self.store is not None and sub is None:
                self.store[(path, count)] = outputs
            if path in self.replace:
                outputs, is_dirty = [self.replace[path]], True
            if path in self.keep:
                self.kept[path] = outputs[0]
            if self.trace is not None:
                self.trace.append((path, step.op, outputs[0]))
            for i, value in zip(step.outputs, outputs):
                values[i] = value
                if is_dirty:
                    dirty.add(i)
        return values[graph.output], graph.output in dirty

    def _arguments(
        self, step: _Step, values: dict[int, Any], dirty: set[int], is_dirty: bool
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if is_dirty and self.repeat > 1:  # values of the first pass meet replaced rows
            keras = _keras()
            values = dict(values)
            for i in step.inputs:
                if i not in dirty:
                    values[i] = keras.ops.repeat(values[i], self.repeat, axis=0)
        if step.node is None:
            return (values[step.inputs[0]],), {}
        args, kwargs = step.node.arguments.fill_in(values)
        return tuple(args), dict(kwargs)

    def _call(self, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any], final: bool) -> Any:
        keras = _keras()
        if "training" in getattr(op, "_call_context_args", ()):
            kwargs["training"] = False
        activation = _activation_name(getattr(op, "activation", None))
        if final and self.strip:
            if isinstance(op, keras.layers.Dense) and activation in PROBABILITIES:
                if not op.built:  # an unbuilt model: the first call builds the layer
                    op(*args, **kwargs)
                y = keras.ops.matmul(args[0], op.kernel)
                if op.bias is not None:
                    y = keras.ops.add(y, op.bias)
                self.dense, self.stripped = (op, args[0], y), f"{op.name} ({activation})"
                return y
            if _is_probability(op):
                self.stripped = op.name
                return args[0]
        if self.guided:
            if isinstance(op, keras.layers.ReLU) or type(op).__name__ in ("Relu", "Relu6"):
                return self.adapter.guided(lambda t: op(t, *args[1:], **kwargs))(args[0])
            if activation in ("relu", "relu6"):
                with _swapped(op, self.adapter.guided(op.activation)):
                    return op(*args, **kwargs)
        y = op(*args, **kwargs)
        if isinstance(op, keras.layers.Dense) and activation == "linear":
            self.dense = (op, args[0], y)
        return y


def _is_model(op: Any) -> bool:
    return isinstance(op, _keras().Model)


def _is_probability(op: Any) -> bool:
    """A layer or op whose output is a probability of its input (Softmax, Activation("softmax"))."""
    keras = _keras()
    if isinstance(op, keras.layers.Activation):
        return _activation_name(op.activation) in PROBABILITIES
    return type(op).__name__ in ("Softmax", "Sigmoid", "LogSoftmax")


def _flatten(outputs: Any) -> list[Any]:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


@contextmanager
def _swapped(layer: Any, activation: Callable[[Any], Any]) -> Iterator[None]:
    """``layer.activation`` replaced for one call, restored in ``finally``."""
    original = layer.activation
    layer.activation = activation
    try:
        yield
    finally:
        layer.activation = original


# ---------------------------------------------------------------------------- the adapter
class KerasAdapter:
    """Adapter for a Keras 3 ``Sequential`` or functional model taking (B, H, W, C) inputs."""

    framework = "keras"

    def __init__(self, model: Any) -> None:
        keras = _keras()
        if not isinstance(model, keras.Model):
            raise CamlensTypeError(f"model must be a keras.Model, got {describe(model)}")
        self.model = model
        # graphs and layer surveys live as long as the model (explainers are cheap to create)
        state = _STATE.get(model)
        if state is None or state[0] != len(model.layers):
            state = _STATE[model] = (len(model.layers), {}, {})
        self._graphs: dict[int, _Graph | None] = state[1]
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

    def graph(self, model: Any) -> _Graph | None:
        """The execution order of ``model`` (cached per model object)."""
        if id(model) not in self._graphs:
            self._graphs[id(model)] = _graph(model)
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
        raise CamlensTypeError(
            "targets that read the model's whole output (camlens.targets.segmentation, "
            "detection) take PyTorch models; explain a Keras model's logits with a class index"
        )

    # ---------------------------------------------------------------- tensors
    def to_torch(self, value: Any) -> torch.Tensor:
        """A backend tensor as a torch tensor, sharing memory where DLPack allows."""
        if isinstance(value, torch.Tensor):
            return value.detach()
        try:
            return torch.from_dlpack(value)
        except (TypeError, RuntimeError, AttributeError, BufferError):
            keras = _keras()
            return torch.from_numpy(np.array(keras.ops.convert_to_numpy(value)))

    def to_backend(self, tensor: torch.Tensor) -> Any:
        """A torch tensor as a tensor of the Keras backend."""
        keras = _keras()
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
        keras = _keras()
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
        if self.backend == "tensorflow":
            import tensorflow as tf

            value = tf.convert_to_tensor(value)
            with tf.GradientTape() as tape:
                tape.watch(value)
                out = function(value)
            return out, lambda cot: tape.gradient(out, value, output_gradients=self.to_backend(cot))
        if self.backend == "jax":
            import jax

            out, pull = jax.vjp(function, value)
            return out, lambda cot: pull(self.to_backend(cot).astype(out.dtype))[0]
        leaf = value.detach().requires_grad_()
        with torch.enable_grad():
            out = function(leaf)

        def pullback(cot: torch.Tensor) -> Any:
            if not out.requires_grad:
                return None
            return torch.autograd.grad(out, leaf, cot.to(out.dtype), allow_unused=True)[0]

        return out, pullback

    def guided(self, function: Callable[[Any], Any]) -> Callable[[Any], Any]:
        r"""``function`` (a ReLU) with guided backpropagation's gradient (Springenberg et al. 2015):
        :math:`\partial y / \partial x` applied to :math:`\mathrm{relu}(\delta)`, not to
        :math:`\delta`, so only positive gradients flow back."""
        if self.backend == "tensorflow":
            import tensorflow as tf

            @tf.custom_gradient
            def guided_tf(x: Any) -> Any:
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = function(x)
                return y, lambda dy: tape.gradient(y, x, output_gradients=tf.nn.relu(dy))

            return guided_tf
        if self.backend == "torch":
            return lambda x: _GuidedTorch.apply(x, function)
        if self.backend == "jax":
            import jax

            @jax.custom_vjp
            def guided_jax(x: Any) -> Any:
                return function(x)

            def backward(pull: Any, dy: Any) -> Any:
                return pull(jax.numpy.maximum(dy, 0))

            guided_jax.defvjp(lambda x: jax.vjp(function, x), backward)
            return guided_jax
        raise CamlensValueError(
            f"guided backpropagation of Keras models is supported on the "
            f"{', '.join(GUIDED_BACKENDS)} backends, not on {self.backend!r}; set "
            "KERAS_BACKEND=tensorflow, or use method='saliency'"
        )

    def _score_cotangent(
        self, logits: torch.Tensor, target: targets_.Target
    ) -> tuple[targets_.ResolvedTarget, torch.Tensor, torch.Tensor]:
        """The resolved target, scores (B,) and d(sum of scores)/d(logits), in torch."""
        resolved = targets_.resolve(target, logits)
        leaf = logits.detach().clone().requires_grad_()
        with torch.enable_grad():
            score = targets_.scores(leaf, resolved)
        found = None
        if score.requires_grad:
            found = torch.autograd.grad(score.sum(), leaf, allow_unused=True)[0]
        cot = torch.zeros_like(leaf) if found is None else found
        return resolved, score.detach().float(), cot.detach()

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
            run = _Pass(self, trace=[])
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
                if _is_model(step.op) and self.graph(step.op) is not None:
                    walk(step.op, path + "/")

        walk(self.model, "")
        return found

    def resolve_layers(self, layer: Any, x: Any) -> list[str]:
        """Paths for ``layer``: "auto", a path ("resnet50/conv5_block3_out"), a layer, or a list."""
        keras = _keras()
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
    def _finish_logits(self, run: _Pass, output: Any) -> torch.Tensor:
        if run.stripped is not None:
            log.info("the model ends in %s; camlens explains the logits before it", run.stripped)
        logits = self.to_torch(output).float()
        return logits[:, None] if logits.ndim == 1 else logits

    def _above(self, native: Any, name: str, cache: Any) -> Callable[[Any], Any]:
        """The logits as a function of layer ``name``'s output alone (the rest from ``cache``)."""
        return lambda value: _Pass(self, replace={name: value}, cache=cache).run(native)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits (N, K) of a canonical (N, C, H, W) torch batch, without any graph."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise CamlensValueError(f"expected a canonical (N, C, H, W) tensor, got {describe(x)}")
        native = self.to_backend(x.permute(0, 2, 3, 1) if self.channels_last else x)
        run = _Pass(self)
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
        first = _Pass(self, keep=set(layers), store={} if gradients else None)
        with self._no_graph():
            output = first.run(native)
        missing = [name for name in layers if name not in first.kept]
        if missing:
            raise CamlensValueError(
                f"layer {missing[0]!r} did not run in the forward pass; pick a layer the model "
                "uses (camlens.layers(model, x) lists them)"
            )
        logits = self._finish_logits(first, output)
        resolved, scores, cot = self._score_cotangent(logits, target)
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
            keras = _keras()
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
        self, x: Any, target: targets_.Target = None, guided: bool = False
    ) -> Capture:
        """Gradients of the target scores with respect to the input: ``activations`` is
        [canonical input (B, C, H, W)], ``gradients`` [d score / d input, canonical].
        ``guided``: guided backpropagation through the model's ReLUs."""
        native = self.native(x)
        run = _Pass(self, guided=guided)
        output, pull = self.vjp(run.run, native)
        logits = self._finish_logits(run, output)
        resolved, scores, cot = self._score_cotangent(logits, target)
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
        first = _Pass(self, keep={name}, store={})
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
            above = _Pass(
                self,
                replace={name: self.to_backend(values.contiguous())},
                cache=first.store,
                repeat=rows // batch,
            )
            return self._finish_logits(above, above.run(native))


class _GuidedTorch(torch.autograd.Function):
    """Guided backpropagation through one ReLU on Keras's torch backend."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, function: Callable) -> torch.Tensor:
        with torch.enable_grad():
            leaf = x.detach().requires_grad_()
            y = function(leaf)
        ctx.pair = (leaf, y)
        return y.detach()

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor, None]:
        leaf, y = ctx.pair
        (grad,) = torch.autograd.grad(y, leaf, dy.clamp_min(0))
        return grad, None


# ---------------------------------------------------------------------------- model specs
def load_spec(spec: str, weights: str | None = None) -> Any:
    """A Keras model from a spec: a ``.keras`` file, or ``keras:NAME`` from keras.applications.

    ``weights`` (``keras:NAME`` only): None/"none" (random), "DEFAULT"/"imagenet" (download) or a
    local weights file.
    """
    keras = _keras()
    kind, _, name = spec.partition(":")
    if kind != "keras":
        path = Path(spec)
        if path.suffix not in (".keras", ".h5"):
            raise CamlensValueError(
                f"unknown Keras model spec {spec!r}; expected a .keras file or keras:NAME "
                "(e.g. keras:ResNet50)"
            )
        if not path.is_file():
            raise CamlensValueError(f"Keras model file {spec!r} does not exist")
        return keras.saving.load_model(path, compile=False)
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
    if weights in (None, "none", "None"):
        chosen: str | None = None
    elif weights in ("DEFAULT", "imagenet"):
        chosen = "imagenet"
    elif Path(weights).is_file():
        chosen = weights
    else:
        raise CamlensValueError(
            f"weights {weights!r} is neither 'DEFAULT', 'imagenet', 'none' nor an existing file"
        )
    try:
        return getattr(keras.applications, name)(weights=chosen)
    except OSError as error:  # a failed download
        raise CamlensValueError(
            f"could not load the {chosen} weights of {name} ({error}); offline, pass a local "
            "weights file: --weights path/to/weights.h5"
        ) from error
