"""The ONNX Runtime adapter: explain an exported ``.onnx`` model without its framework.

An ONNX graph has no hooks and camlens computes no gradients through it, so only the methods that
need none apply (:data:`~camlens.backends.base.ONNX_METHODS`: Eigen-CAM, KPCA-CAM, Score-CAM,
SS-CAM, IS-CAM, Ablation-CAM, Recipro-CAM, RISE, occlusion). The user's model is never changed:

- a layer is a tensor of the graph, named as in the file (``/layer4/layer4.1/relu_1/Relu_output_0``
  for a torchvision ResNet exported by ``torch.onnx.export``); ``layers`` lists the tensors that
  are spatial maps (N, C, h, w) for the input's size, from ``onnx.shape_inference`` on a copy whose
  input is fixed to that size, in graph order; ``"auto"`` picks, as for PyTorch, the last of them
  that depends on the input, reaches the output and is not a pooling, dropout, flatten or identity;
- a capture runs a copy of the graph with the chosen tensors added as outputs;
- :meth:`OnnxModel.logits_above` runs the sub-graph from the layer to the logits as its own
  session: the nodes that depend on the layer, the constants they use, and as extra inputs the
  values below the layer they read (a residual block's skip connection), computed once per image.

Every session (plain, per captured layers, per sub-graph) is built once and cached. A final
``Softmax`` node is skipped, so scores are the logits before it. ONNX Runtime runs float32 on the
CPU (or the providers given): the ``bf16`` and ``int8`` precisions of Score-CAM are refused.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from os import PathLike
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from camlens import targets as targets_
from camlens.backends.base import (
    ONNX_METHODS,
    Capture,
    LayerInfo,
    onnx_gradient_error,
    whole_output_refused,
)
from camlens.backends.torch_layers import EXCLUDED, layout_of
from camlens.errors import CamlensTypeError, CamlensValueError, describe

log = logging.getLogger("camlens")

#: ONNX operators "auto" never picks (as :data:`~camlens.backends.torch_layers.EXCLUDED`).
SKIPPED = re.compile(EXCLUDED.pattern + "|Reshape|Transpose|Squeeze|Unsqueeze|Shape|Constant|Cast")


def _load(source: Any) -> onnx.ModelProto:
    """An ONNX model from a path, bytes or a ``ModelProto``, checked; a clear error otherwise."""
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (str, PathLike, bytes)):
        what = "the given bytes" if isinstance(source, bytes) else repr(str(source))
        try:
            model = (
                onnx.load_model_from_string(source)
                if isinstance(source, bytes)
                else onnx.load(str(source))
            )
            onnx.checker.check_model(model)
        except FileNotFoundError as error:
            raise CamlensValueError(f"ONNX model file {what} does not exist") from error
        except Exception as error:  # protobuf's DecodeError, onnx's ValidationError, OSError
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            raise CamlensValueError(
                f"{what} is not a valid ONNX model ({type(error).__name__}"
                f"{': ' + reason if reason else ''}); export it again with torch.onnx.export"
            ) from error
        if not model.graph.node:
            raise CamlensValueError(f"{what} is not a valid ONNX model (its graph has no nodes)")
        return model
    raise CamlensTypeError(
        f"expected an ONNX model path or onnx.ModelProto, got {describe(source)}"
    )


def _dims(value: onnx.ValueInfoProto) -> tuple[int | None, ...] | None:
    """The static dims of a tensor's shape (None for a symbolic one), or None without a shape."""
    kind = value.type.tensor_type
    if not kind.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim)


class OnnxModel:
    """An ONNX model explained with ONNX Runtime; it is its own adapter (``framework="onnx"``).

    ``source``: a ``.onnx`` path, its bytes or an ``onnx.ModelProto``; ``providers``: ONNX
    Runtime's execution providers (the CPU's by default). Inputs are float32 (N, C, H, W) batches
    (torch tensors or numpy arrays); a graph with a fixed batch size runs that many rows a time.
    """

    framework = "onnx"

    def __init__(self, source: Any, providers: Sequence[str] | None = None) -> None:
        self.proto = _load(source)
        self.providers = list(providers or ["CPUExecutionProvider"])
        graph = self.proto.graph
        weights = {init.name for init in graph.initializer}
        inputs = [value for value in graph.input if value.name not in weights]
        if len(inputs) != 1 or len(_dims(inputs[0]) or ()) != 4:
            shapes = [(value.name, _dims(value)) for value in inputs]
            raise CamlensValueError(
                f"camlens explains ONNX models with one image input (N, C, H, W), got inputs "
                f"{shapes}"
            )
        self.input = inputs[0].name
        self.input_dims = _dims(inputs[0]) or ()
        self.output = graph.output[0].name
        producer = {out: node for node in graph.node for out in node.output}
        last = producer.get(self.output)
        if last is not None and last.op_type in ("Softmax", "LogSoftmax", "Sigmoid"):
            log.info(
                "the ONNX model ends in %s; camlens explains the logits before it", last.op_type
            )
            self.output = last.input[0]
        self.order = [node for node in graph.node]
        self._sessions: dict[Any, ort.InferenceSession] = {}
        self._surveys: dict[tuple[int, ...], tuple[list[LayerInfo], str | None]] = {}
        self._above: dict[str, tuple[list[str], list[str]]] = {}

    # ---------------------------------------------------------------- facts
    @property
    def model(self) -> OnnxModel:
        """The model: this object (the ONNX graph is :attr:`proto`)."""
        return self

    @property
    def device(self) -> torch.device:
        """The CPU: canonical torch batches are taken and handed out there."""
        return torch.device("cpu")

    @property
    def static_size(self) -> tuple[int, int] | None:
        """The input's fixed (H, W), or None where either is dynamic."""
        height, width = self.input_dims[2:]
        return (height, width) if height and width else None

    def __repr__(self) -> str:
        return f"OnnxModel(input={self.input!r}, shape={self.input_dims}, output={self.output!r})"

    # ---------------------------------------------------------------- tensors
    def native(self, x: Any) -> torch.Tensor:
        """``x`` (N, C, H, W), a torch tensor or numpy array, as a float32 CPU torch tensor."""
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise CamlensTypeError(
                f"expected x as a float (N, C, H, W) tensor or array, got {describe(x)}"
            )
        if x.ndim != 4:
            hint = "; add a batch dimension with x[None]" if x.ndim == 3 else ""
            raise CamlensValueError(f"expected x of shape (N, C, H, W), got {tuple(x.shape)}{hint}")
        channels = self.input_dims[1]
        if channels and x.shape[1] != channels:
            raise CamlensValueError(
                f"the ONNX model takes {channels} channels, got x of shape {tuple(x.shape)}"
            )
        return x.detach().float().cpu()

    def as_tensor(self, x: Any) -> torch.Tensor:
        """The canonical float32 (N, C, H, W) torch batch."""
        return self.native(x)

    def input_size(self, x: Any) -> tuple[int, int]:
        """The spatial size (H, W) of a batch."""
        return int(x.shape[2]), int(x.shape[3])

    # ---------------------------------------------------------------- sessions
    def _session(self, key: Any, build: Any) -> ort.InferenceSession:
        if key not in self._sessions:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            proto = build()
            self._sessions[key] = ort.InferenceSession(
                proto.SerializeToString(), options, providers=self.providers
            )
        return self._sessions[key]

    def _with_outputs(self, names: Sequence[str]) -> ort.InferenceSession:
        """The session of a copy of the graph whose outputs are ``names``."""

        def build() -> onnx.ModelProto:
            copy = onnx.ModelProto()
            copy.CopyFrom(self.proto)
            del copy.graph.output[:]
            for name in names:
                copy.graph.output.append(onnx.ValueInfoProto(name=name))
            return copy

        return self._session(("outputs", tuple(names)), build)

    def _run(
        self, session: ort.InferenceSession, feeds: dict[str, np.ndarray], names: list[str]
    ) -> list[np.ndarray]:
        """``names`` computed from ``feeds`` (all rows), a fixed batch size at a time."""
        fixed = self.input_dims[0]
        rows = next(iter(feeds.values())).shape[0]
        if not fixed or fixed == rows:
            return session.run(names, feeds)
        parts = [
            session.run(names, {k: v[start : start + fixed] for k, v in feeds.items()})
            for start in range(0, rows, fixed)
        ]
        return [np.concatenate([part[i] for part in parts]) for i in range(len(names))]

    def _forward(self, x: Any, names: Sequence[str]) -> list[torch.Tensor]:
        """The logits and the tensors ``names`` for the batch ``x``."""
        wanted = [self.output, *names]
        feeds = {self.input: self.native(x).numpy()}
        values = self._run(self._with_outputs(wanted), feeds, wanted)
        return [torch.from_numpy(np.ascontiguousarray(v)).float() for v in values]

    # ---------------------------------------------------------------- layers
    def _shapes(self, size: tuple[int, ...]) -> dict[str, tuple[int | None, ...]]:
        """Every tensor's shape for a (1, C, *size) input (shape inference on a copy)."""
        copy = onnx.ModelProto()
        copy.CopyFrom(self.proto)
        value = next(v for v in copy.graph.input if v.name == self.input)
        dims = value.type.tensor_type.shape.dim
        for dim, number in zip(dims, (1, self.input_dims[1] or 3, *size)):
            dim.Clear()
            dim.dim_value = number
        inferred = onnx.shape_inference.infer_shapes(copy, data_prop=True)
        shapes = {}
        for info in (*inferred.graph.value_info, *inferred.graph.output):
            found = _dims(info)
            if found is not None:
                shapes[info.name] = found
        return shapes

    def _live(self) -> tuple[set[str], set[str]]:
        """The tensors that depend on the input, and those the output depends on."""
        below = {self.input}
        for node in self.order:
            if any(name in below for name in node.input):
                below.update(node.output)
        above = {self.output}
        for node in reversed(self.order):
            if any(name in above for name in node.output):
                above.update(name for name in node.input if name)
        return below, above

    def layers(self, x: Any) -> tuple[list[LayerInfo], str | None]:
        """The spatial (N, C, h, w) tensors for inputs shaped like ``x``, in graph order, and the
        "auto" choice (cached per input size)."""
        size = self.input_size(self.native(x))
        if size not in self._surveys:
            shapes = self._shapes(size)
            below, above = self._live()
            infos: list[LayerInfo] = []
            chosen = None
            for node in self.order:
                for name in node.output:
                    shape = shapes.get(name)
                    if not shape or len(shape) != 4 or None in shape[1:] or name not in below:
                        continue
                    dims = (1, *(int(d or 0) for d in shape[1:]))
                    found = layout_of(dims, size)
                    if found is None or found.kind != "nchw":
                        continue
                    infos.append(LayerInfo(name, node.op_type, dims, found))
                    skipped = SKIPPED.search(node.op_type)
                    if name in above and not skipped:
                        chosen = name
            self._surveys[size] = infos, chosen
        return self._surveys[size]

    def resolve_layers(self, layer: Any, x: Any) -> list[str]:
        """Tensor names for "auto", a tensor name, or a list of them."""
        if isinstance(layer, (list, tuple)):
            if not layer:
                raise CamlensValueError("layer must not be an empty list")
            return [name for item in layer for name in self.resolve_layers(item, x)]
        if not isinstance(layer, str):
            raise CamlensTypeError(
                f"layer must be 'auto', a tensor name of the ONNX graph or a list of them, got "
                f"{describe(layer)}"
            )
        infos, auto = self.layers(x)
        if layer == "auto":
            if auto is None:
                raise CamlensValueError(
                    "layer='auto' found no tensor of the ONNX model that is a spatial map "
                    "(N, C, h, w) with h*w > 1; pass layer=NAME"
                )
            log.info("layer='auto' resolved to %r", auto)
            return [auto]
        names = [info.name for info in infos]
        if layer not in names:
            close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
            hint = f"close candidates: {', '.join(close)}" if close else "no close candidates"
            raise CamlensValueError(
                f"layer {layer!r} is not a spatial tensor of the ONNX model; {hint} "
                "(camlens layers MODEL.onnx lists them)"
            )
        return [layer]

    # ---------------------------------------------------------------- running
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits (N, K) of a canonical batch."""
        logits = self._forward(x, [])[0]
        return logits[:, None] if logits.ndim == 1 else logits.reshape(logits.shape[0], -1)

    def infer(self, x: torch.Tensor, *, precision: str = "fp32") -> torch.Tensor:
        """Logits (N, K) for many-forward methods: float32 only (bf16 and int8 are refused)."""
        if precision != "fp32":
            raise CamlensValueError(
                f"precision={precision!r} is for PyTorch models; ONNX Runtime runs this model in "
                "float32: use precision='fp32' (or 'auto')"
            )
        return self.logits(x)

    def bf16_ok(self) -> bool:
        """Whether bfloat16 autocast is offered: never (ONNX Runtime runs the graph's float32)."""
        return False

    def int8(
        self, calibration: torch.Tensor, *, reuse: bool = True
    ) -> AbstractContextManager[None]:
        """Refused: camlens quantizes PyTorch models only."""
        raise CamlensValueError(
            "precision='int8' is for PyTorch models (it uses PyTorch's int8 kernels); ONNX "
            "Runtime runs this model in float32: use precision='fp32' (or 'auto')"
        )

    def outputs(self, x: Any) -> Any:
        """Refused: targets that read the model's whole output are for PyTorch models."""
        raise whole_output_refused("ONNX")

    def capture(
        self,
        x: Any,
        layers: Sequence[str],
        target: targets_.Target = None,
        *,
        gradients: bool = True,
        head: bool = False,
    ) -> Capture:
        """One run keeping the layers' tensors (no gradients, no head: refused)."""
        if gradients or head:
            raise onnx_gradient_error("a capture with gradients or the linear head")
        values = self._forward(x, list(layers))
        logits = values[0].reshape(values[0].shape[0], -1)
        resolved = targets_.resolve(target, logits)
        return Capture(
            activations=values[1:],
            gradients=None,
            logits=logits,
            target=resolved,
            scores=targets_.scores(logits, resolved).float(),
            probs=targets_.probabilities(logits, resolved),
        )

    def input_gradients(self, x: Any, target: targets_.Target = None, guided: Any = False) -> Any:
        """Refused: camlens computes no gradients through an ONNX graph."""
        raise onnx_gradient_error("a pixel-space gradient method")

    # ---------------------------------------------------------------- above a layer
    def _split(self, layer: str) -> tuple[list[str], list[str]]:
        """The nodes of the sub-graph from ``layer`` to the output (by index), and its extra
        inputs: values below the layer that it reads (computed from the image)."""
        if layer not in self._above:
            below, above = self._live()
            fed = {layer}
            for node in self.order:
                if any(name in fed for name in node.input) and layer not in node.output:
                    fed.update(node.output)
            nodes = [
                n
                for n in self.order
                if layer not in n.output
                and any(o in above for o in n.output)
                and (any(o in fed for o in n.output) or not any(o in below for o in n.output))
            ]
            made = {o for n in nodes for o in n.output} | {layer}
            weights = {init.name for init in self.proto.graph.initializer}
            side = sorted(
                {i for n in nodes for i in n.input if i and i not in made and i not in weights}
            )
            self._above[layer] = [n.name or str(id(n)) for n in nodes], side
        return self._above[layer]

    def _above_session(self, layer: str, types: Sequence[int]) -> ort.InferenceSession:
        """The session of the sub-graph above ``layer`` (its extra inputs of ``types``)."""
        names, side = self._split(layer)

        def build() -> onnx.ModelProto:
            wanted = set(names)
            nodes = [n for n in self.order if (n.name or str(id(n))) in wanted]
            used = {i for n in nodes for i in n.input}
            weights = [init for init in self.proto.graph.initializer if init.name in used]
            inputs = [
                onnx.helper.make_tensor_value_info(name, kind, None)
                for name, kind in zip((layer, *side), (onnx.TensorProto.FLOAT, *types))
            ]
            output = onnx.helper.make_tensor_value_info(self.output, onnx.TensorProto.FLOAT, None)
            graph = onnx.helper.make_graph(nodes, "above", inputs, [output], weights)
            copy = onnx.helper.make_model(graph, opset_imports=self.proto.opset_import)
            copy.ir_version = self.proto.ir_version
            return copy

        return self._session(("above", layer), build)

    def logits_above(
        self, x: Any, layer: str, activations: torch.Tensor, image: int = 0
    ) -> torch.Tensor:
        """Logits (N, K) of the sub-graph above ``layer`` run on each row of ``activations``
        (N, C, h, w); the values below the layer it reads come from one run on image ``image``."""
        _, side = self._split(layer)
        feeds = {layer: activations.detach().float().cpu().contiguous().numpy()}
        rows = activations.shape[0]
        if side:
            one = {self.input: self.native(x)[image : image + 1].numpy()}
            names = [self.output, *side]
            values = self._run(self._with_outputs(names), one, names)[1:]
            for name, value in zip(side, values):
                batched = value.dtype.kind == "f" and value.ndim and value.shape[0] == 1
                feeds[name] = np.repeat(value, rows, axis=0) if batched else value
        types = [onnx.helper.np_dtype_to_tensor_dtype(feeds[name].dtype) for name in side]
        session = self._above_session(layer, types)
        logits = torch.from_numpy(session.run([self.output], feeds)[0]).float()
        return logits.reshape(rows, -1)


def load(path: str | PathLike, weights: str | None = None) -> OnnxModel:
    """An ``.onnx`` file as an :class:`OnnxModel` (its weights are in the file)."""
    if weights not in (None, "none", "None"):
        raise CamlensValueError(f"an ONNX model file holds its weights; drop --weights {weights!r}")
    return OnnxModel(path)


__all__ = ["ONNX_METHODS", "OnnxModel", "load"]
