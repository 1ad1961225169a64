"""How camlens evaluates a Keras model itself, layer by layer (see :mod:`camlens.backends.keras`).

A ``Sequential`` or functional model, and every such model nested inside it, is walked in its own
execution order (:class:`Graph`); one :class:`Pass` evaluates it, keeping, replacing or reading
from a cache the outputs of named layers. A final probability (softmax, sigmoid, log-softmax) is
left out, so the output is the logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import keras

from camlens.errors import CamlensValueError

if TYPE_CHECKING:
    from camlens.backends.keras import KerasAdapter

#: Output activations turned into logits: the final layer is evaluated without them.
PROBABILITIES = ("softmax", "sigmoid", "log_softmax")


def activation_name(function: Any) -> str:
    return getattr(function, "__name__", "") if callable(function) else ""


@dataclass
class Step:
    """One call in a model's execution order: an operation reading and writing tensor ids."""

    name: str
    op: Any
    inputs: list[int]
    outputs: list[int]
    node: Any = None  # the functional node, whose arguments place the values; None: one input


@dataclass
class Graph:
    input: int
    output: int
    steps: list[Step]


def graph_of(model: Any) -> Graph | None:
    """The execution order of a ``Sequential`` or functional model; None for other layers."""
    from keras.src.models.functional import Functional
    from keras.src.models.sequential import Sequential

    if isinstance(model, Sequential) and type(model).call is Sequential.call:
        layers = list(model.layers)
        steps = [Step(layer.name, layer, [i], [i + 1]) for i, layer in enumerate(layers)]
        return Graph(0, len(layers), steps)
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
                    Step(
                        node.operation.name,
                        node.operation,
                        [id(t) for t in node.input_tensors],
                        [id(t) for t in node.outputs],
                        node,
                    )
                )
        return Graph(id(model.inputs[0]), id(model.outputs[0]), steps)
    return None


@dataclass
class Pass:
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
            sub = self.adapter.graph(step.op) if is_model(step.op) else None
            if sub is not None:
                arg = self._arguments(step, values, dirty, is_dirty)[0][0]
                outputs, is_dirty = self._model(step.op, path + "/", arg, is_dirty, is_final)
                outputs = [outputs]
            elif not is_dirty and self.cache is not None:
                outputs = self.cache[(path, count)]
            else:
                args, kwargs = self._arguments(step, values, dirty, is_dirty)
                outputs = flatten(self._call(step.op, args, kwargs, is_final))
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
        self, step: Step, values: dict[int, Any], dirty: set[int], is_dirty: bool
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if is_dirty and self.repeat > 1:  # values of the first pass meet replaced rows
            values = dict(values)
            for i in step.inputs:
                if i not in dirty:
                    values[i] = keras.ops.repeat(values[i], self.repeat, axis=0)
        if step.node is None:
            return (values[step.inputs[0]],), {}
        args, kwargs = step.node.arguments.fill_in(values)
        return tuple(args), dict(kwargs)

    def _call(self, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any], final: bool) -> Any:
        if "training" in getattr(op, "_call_context_args", ()):
            kwargs["training"] = False
        activation = activation_name(getattr(op, "activation", None))
        if final and self.strip:
            if isinstance(op, keras.layers.Dense) and activation in PROBABILITIES:
                if not op.built:  # an unbuilt model: the first call builds the layer
                    op(*args, **kwargs)
                y = keras.ops.matmul(args[0], op.kernel)
                if op.bias is not None:
                    y = keras.ops.add(y, op.bias)
                self.dense, self.stripped = (op, args[0], y), f"{op.name} ({activation})"
                return y
            if is_probability(op):
                self.stripped = op.name
                return args[0]
        if self.guided:
            if isinstance(op, keras.layers.ReLU) or type(op).__name__ in ("Relu", "Relu6"):
                return self.adapter.guided(lambda t: op(t, *args[1:], **kwargs))(args[0])
            if activation in ("relu", "relu6"):
                with swapped(op, self.adapter.guided(op.activation)):
                    return op(*args, **kwargs)
        y = op(*args, **kwargs)
        if isinstance(op, keras.layers.Dense) and activation == "linear":
            self.dense = (op, args[0], y)
        return y


def is_model(op: Any) -> bool:
    return isinstance(op, keras.Model)


def is_probability(op: Any) -> bool:
    """A layer or op whose output is a probability of its input (Softmax, Activation("softmax"))."""
    if isinstance(op, keras.layers.Activation):
        return activation_name(op.activation) in PROBABILITIES
    return type(op).__name__ in ("Softmax", "Sigmoid", "LogSoftmax")


def flatten(outputs: Any) -> list[Any]:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


@contextmanager
def swapped(layer: Any, activation: Callable[[Any], Any]) -> Iterator[None]:
    """``layer.activation`` replaced for one call, restored in ``finally``."""
    original = layer.activation
    layer.activation = activation
    try:
        yield
    finally:
        layer.activation = original
