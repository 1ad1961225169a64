"""Int8 copies of PyTorch models for the many-forward methods (``precision="int8"``).

Score-CAM and the deletion/insertion curves spend nearly all their time in forwards without
gradients. On x86 CPUs with VNNI, PyTorch's int8 kernels run a ResNet-18 forward about 5x faster
than float32. :func:`quantize_int8` makes such a copy by post-training static quantization
(torch.ao FX graph mode, x86 engine): weights per-channel symmetric int8, activations per-tensor
uint8 with ranges observed (histogram observer) on a calibration batch of the very inputs the
method is about to run. The user's model is never modified. The result is approximate: on
ResNet-18 the Score-CAM map stays within about 3e-3 of float32 (docs/benchmarks.md); the adapter
checks each copy on its calibration batch and warns when a class probability moves by more than
``GAP_WARNING``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from camlens.errors import CamlensValueError

ENGINE = "x86"
PROBABILITY_MODULES = (nn.Softmax, nn.LogSoftmax)
CALIBRATION_ROWS = 32
GAP_WARNING = 0.05  # the largest probability change on the calibration batch left unreported


def calibration_rows(count: int, rows: int = CALIBRATION_ROWS) -> torch.Tensor:
    """Indices of up to ``rows`` of ``count`` inputs, spread evenly from the first to the last:
    the calibration batch of a call that will run all ``count``."""
    return torch.linspace(0, count - 1, min(rows, count)).round().long().unique()


def probability_gap(exact: torch.Tensor, approximate: torch.Tensor) -> float:
    """The largest change of a class probability (softmax; sigmoid for one logit) between two
    (N, K) logit batches."""
    if exact.shape[1] == 1:
        return float((torch.sigmoid(approximate) - torch.sigmoid(exact)).abs().max())
    return float((approximate.softmax(dim=1) - exact.softmax(dim=1)).abs().max())


def int8_supported() -> bool:
    """Whether this PyTorch build has the x86 int8 engine (x86-64 CPUs)."""
    return ENGINE in torch.backends.quantized.supported_engines


def quantize_int8(model: nn.Module, calibration: torch.Tensor) -> nn.Module:
    """An int8 copy of ``model`` calibrated on the float (N, C, H, W) batch ``calibration``.

    A final ``nn.Softmax``/``LogSoftmax`` is dropped from the copy, so it returns logits as the
    adapter does. Raises :class:`~camlens.errors.CamlensValueError` naming the fix when the model
    is not on the CPU, the engine is missing, or torch.fx cannot trace the model.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if device.type != "cpu":
        raise CamlensValueError(
            f"precision='int8' runs on the CPU only (PyTorch's x86 int8 kernels) and the model "
            f"is on {device}; use precision='bf16' or 'fp32' there"
        )
    if not int8_supported():
        raise CamlensValueError(
            f"precision='int8' needs PyTorch's {ENGINE!r} quantized engine, which this build "
            f"lacks (it has {', '.join(torch.backends.quantized.supported_engines)}); use "
            "precision='fp32'"
        )
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():
        # torch.ao announces its move to torchao on every call; the API still works.
        warnings.simplefilter("ignore")
        try:
            graph = torch.fx.symbolic_trace(copy.deepcopy(model).eval())
        except Exception as error:  # noqa: BLE001 - any tracing failure has the same fix
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise CamlensValueError(
                f"precision='int8' needs a model torch.fx can trace, and tracing "
                f"{type(model).__name__} failed ({type(error).__name__}: {reason}); use "
                "precision='fp32'"
            ) from None
        _drop_final_probability(graph)
        with _engine():
            example = (calibration[:1].float(),)
            prepared = prepare_fx(graph, get_default_qconfig_mapping(ENGINE), example)
            with torch.inference_mode():
                prepared(calibration.float())
            quantized = convert_fx(prepared)
    return quantized.eval()


@contextmanager
def _engine() -> Iterator[None]:
    """PyTorch's quantized engine set to :data:`ENGINE` for the block, then restored."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = ENGINE
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def _drop_final_probability(graph: torch.fx.GraphModule) -> None:
    """Return the input of a final Softmax/LogSoftmax module instead of its output."""
    output = next(node for node in graph.graph.nodes if node.op == "output")
    result = output.args[0]
    if (
        isinstance(result, torch.fx.Node)
        and result.op == "call_module"
        and isinstance(graph.get_submodule(str(result.target)), PROBABILITY_MODULES)
    ):
        output.args = (result.args[0],)
        graph.graph.eliminate_dead_code()
        graph.recompile()


def run_int8(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The quantized model's output for a float batch, computed with the x86 engine."""
    with _engine(), torch.inference_mode():
        return model(x.float().contiguous(memory_format=torch.channels_last))
