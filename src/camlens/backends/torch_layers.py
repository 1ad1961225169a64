"""Finding the layer to explain in a PyTorch model.

A layer is explainable when its output is a spatial map: (B, C, h, w), channels-last (B, h, w, C)
as in torchvision's Swin, or a vision transformer's token sequence (B, p + h*w, C) whose p prefix
(class, distillation, register) tokens are dropped. ``"auto"`` surveys one forward pass of the first
image and picks the last such layer that (a) is not a pooling, dropout, flatten or layout-only
module, (b) runs once, and (c) receives gradient from the output. In attention models (ViT, DeiT,
BEiT, Swin; timm and Hugging Face alike) the last block's input norm is chosen: in a ViT only the
tokens entering the last attention block still influence the class token, and the value projection
(which still receives gradient) would drop the attention weights.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from camlens.backends.base import LayerInfo, Layout
from camlens.backends.inputs import Inputs
from camlens.errors import CamlensError, CamlensValueError

#: Module classes never chosen by "auto": they pool, drop, flatten or only re-lay out a map.
EXCLUDED = re.compile(r"Pool|Dropout|Flatten|Unflatten|Identity|Permute|Softmax|Upsample")
#: Module classes that hand their input on unchanged (in eval mode): they never produce a map.
PASS_THROUGH = re.compile(r"Dropout|Identity")


def _fits(h: int, w: int, height: int, width: int) -> bool:
    """Whether an (h, w) grid can be a downsampled (height, width) image."""
    return 1 <= h <= height and 1 <= w <= width and abs(h * width - w * height) <= 0.25 * w * height


def layout_of(shape: tuple[int, ...], size: tuple[int, ...]) -> Layout | None:
    """The layout of an output of ``shape`` for an input of spatial ``size``, or None; a clip's
    or volume's ``size`` is (T, H, W) and its maps (B, C, t, h, w)."""
    if len(size) == 3:
        if len(shape) != 5:
            return None
        frames, height, width = size
        t, h, w = shape[2:]
        if 1 <= t <= frames and h * w > 1 and _fits(h, w, height, width):
            return Layout("ncthw", (t, h, w))
        return None
    height, width = size
    if len(shape) == 4:
        _, a, b, c = shape
        if b * c > 1 and _fits(b, c, height, width):
            return Layout("nchw", (b, c))
        if a * b > 1 and _fits(a, b, height, width):
            return Layout("nhwc", (a, b))
    if len(shape) == 3:
        _, n, _ = shape
        for prefix in range(0, min(n - 2, 16) + 1):
            cells = n - prefix
            h = round(math.sqrt(cells * height / width))
            if h >= 1 and cells % h == 0 and _fits(h, cells // h, height, width):
                return Layout("tokens", (h, cells // h), prefix)
    return None


def main_tensor(output: object) -> torch.Tensor | None:
    """The tensor a module returns (the first tensor of a tuple or list)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    return None


def replace_main(output: object, tensor: torch.Tensor) -> object:
    """``output`` with its main tensor replaced by ``tensor`` (same container type)."""
    if isinstance(output, torch.Tensor):
        return tensor
    assert isinstance(output, (tuple, list))
    items = list(output)
    index = next(i for i, item in enumerate(items) if isinstance(item, torch.Tensor))
    items[index] = tensor
    if isinstance(output, list):
        return items
    if hasattr(output, "_fields"):  # namedtuple
        return type(output)(*items)
    return tuple(items)


def module_by_name(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; an unknown name lists the closest real ones."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"close candidates: {', '.join(close)}" if close else "no close candidates"
    raise CamlensValueError(
        f"layer {name!r} is not a module of {type(model).__name__}; {hint} "
        "(`camlens layers --model SPEC` or camlens.layers(model, x) lists the explainable ones)"
    )


def name_of(model: nn.Module, module: nn.Module) -> str:
    """The dotted name of ``module`` inside ``model``."""
    for name, candidate in model.named_modules():
        if candidate is module and name:
            return name
    raise CamlensValueError(
        f"layer {type(module).__name__} is not a submodule of {type(model).__name__}; pass a "
        "module of the explained model or its dotted name"
    )


@dataclass
class _Call:
    name: str
    module: nn.Module
    tensor: torch.Tensor
    inputs: torch.Tensor | None


def survey(model: nn.Module, x: Any, logits_of) -> tuple[list[LayerInfo], str | None]:
    """Every explainable layer for input ``x`` (one image, or one row of several inputs) in
    forward order, and the auto choice.

    ``logits_of`` extracts the score tensor from the model's output.
    """
    image = x.image if isinstance(x, Inputs) else x
    size = tuple(int(n) for n in image.shape[2:]) if image.ndim == 5 else tuple(image.shape[-2:])
    calls, counts, returned = _trace(model, x)
    try:
        output = logits_of(returned)
    except CamlensError:  # a detector's list of dicts: no logit tensor to probe with
        output = torch.zeros(0)
    infos, tensors = _explainable(calls, counts, size)
    dense = output.ndim == 4 and len(size) == 2
    dense = dense and _fits(output.shape[2], output.shape[3], size[0], size[-1])
    if dense:
        # a dense (segmentation) output: the class projection and its upsampling only restate the
        # prediction, so "auto" explains the last feature map before them
        while infos and infos[-1].shape[1] == output.shape[1]:
            infos.pop()
            tensors.pop()
    # in attention models, the last block's input norm: later token maps either reach the output
    # only through the attention's value average (Grad-CAM there drops the attention weights,
    # where the spatial information is) or, in a class-token model, not at all; a dense model's
    # decoder comes after its attention blocks
    preferred = set() if dense else block_inputs(model, infos)
    auto = _reached(infos, tensors, _probes(calls, output), preferred)
    return infos, auto or (infos[-1].name if infos else None)


def declared_layer(model: nn.Module, infos: list[LayerInfo], auto: str | None) -> str | None:
    """The "auto" layer: a camlens ``Classifier``'s ``cam_layer`` (the map its GAP + Linear head
    averages: a ViT body's token grid rather than the last block's input norm), else ``auto``."""
    declared = getattr(model, "cam_layer", None)
    if isinstance(declared, str) and declared in {info.name for info in infos}:
        return declared
    return auto


def _trace(model: nn.Module, x: Any) -> tuple[list[_Call], dict[int, int], Any]:
    """One forward pass with every named module hooked, recording a graph: the floating-point
    outputs in call order, how often each module ran, and what the model returned."""
    image = x.image if isinstance(x, Inputs) else x
    calls: list[_Call] = []
    counts: dict[int, int] = {}
    handles = []

    def record(name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            counts[id(module)] = counts.get(id(module), 0) + 1
            tensor = main_tensor(output)
            if tensor is not None and tensor.is_floating_point():
                calls.append(_Call(name, module, tensor, main_tensor(args)))

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(record(name)))
        with torch.enable_grad():
            probe = image.detach().clone().requires_grad_()
            returned = x.replace(probe).call(model) if isinstance(x, Inputs) else model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return calls, counts, returned


def _explainable(
    calls: list[_Call], counts: dict[int, int], size: tuple[int, ...]
) -> tuple[list[LayerInfo], list[torch.Tensor]]:
    """The layers whose output is a map or a token sequence, one per output tensor (named after
    the last module that returns it and runs once), with those tensors."""
    groups: dict[int, list[_Call]] = {}
    for call in calls:
        groups.setdefault(id(call.tensor), []).append(call)
    infos: list[LayerInfo] = []
    tensors: list[torch.Tensor] = []
    for members in groups.values():
        # the module that made the tensor: the first one to return it that is not a pass-through
        # (timm's BatchNormAct2d returns a tensor made inside it first through its Identity)
        makers = [m for m in members if not PASS_THROUGH.search(type(m.module).__name__)]
        producer = makers[0] if makers else members[0]
        if EXCLUDED.search(type(producer.module).__name__):
            continue
        layout = layout_of(tuple(producer.tensor.shape), size)
        if layout is None:
            continue
        chosen = [
            m
            for m in members
            if counts[id(m.module)] == 1 and not EXCLUDED.search(type(m.module).__name__)
        ]
        if not chosen:
            continue
        last = chosen[-1]
        infos.append(
            LayerInfo(last.name, type(last.module).__name__, tuple(producer.tensor.shape), layout)
        )
        tensors.append(producer.tensor)
    return infos, tensors


def _probes(calls: list[_Call], output: torch.Tensor) -> list[torch.Tensor]:
    """The scores that must reach the layer: the largest output, or, for a head initialised to
    zero (torchvision's ViT), a random projection of the features entering the last linear
    layer."""
    linear_inputs = [call for call in calls if isinstance(call.module, nn.Linear)]
    probes = [output.flatten().float().max()] if output.numel() else []
    if linear_inputs:
        features = linear_inputs[-1].inputs
        assert features is not None
        weights = torch.randn(
            features.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32
        ).to(features.device)
        probes.append((features.float() * weights).sum())  # a plain sum is constant after a norm
    return probes


def _reached(
    infos: list[LayerInfo],
    tensors: list[torch.Tensor],
    probes: list[torch.Tensor],
    preferred: set[str],
) -> str | None:
    """The last layer a probe's gradient reaches with a non-zero map, among the ``preferred``
    names first, then among all; None when no probe reaches any."""
    # token layers must have the width of the last token sequence: a ViT's qkv projection (3x)
    # or MLP hidden layer (4x) are not maps of the embedding
    widths = [info.shape[-1] for info in infos if info.layout.kind == "tokens"]
    reachable = [
        (info, t)
        for info, t in zip(infos, tensors)
        if t.requires_grad and (info.layout.kind != "tokens" or info.shape[-1] == widths[-1])
    ]
    first = [(info, t) for info, t in reachable if info.name in preferred]
    for candidates in (first, reachable):
        for score in probes:
            if not score.requires_grad or not candidates:
                continue
            gradients = torch.autograd.grad(
                score, [t for _, t in candidates], retain_graph=True, allow_unused=True
            )
            for (info, _), gradient in zip(reversed(candidates), reversed(gradients)):
                if gradient is not None and info.layout.to_nchw(gradient).abs().amax() > 0:
                    return info.name
    return None


def block_inputs(model: nn.Module, infos: list[LayerInfo]) -> set[str]:
    """Names of the input norms of attention blocks: the first norm (in forward order) of a module
    with an attention module among its direct children (timm's ``blocks.i.norm1``, Hugging Face's
    ``layer.i.layernorm_before``, Swin's likewise)."""
    modules = dict(model.named_modules())
    seen: set[str] = set()
    names: set[str] = set()
    for info in infos:
        if "Norm" not in info.kind or "." not in info.name:
            continue
        parent = info.name.rsplit(".", 1)[0]
        if parent in seen:
            continue
        seen.add(parent)
        if any("Attention" in type(child).__name__ for child in modules[parent].children()):
            names.add(info.name)
    return names


def detector_layers(model: nn.Module) -> list[str] | None:
    """The "auto" layers of a detector, fused as for ``layer=[...]``, or None for other models.

    torchvision's FPN detectors (Faster R-CNN, RetinaNet, FCOS): the FPN's output convolutions,
    one per pyramid level (``backbone.fpn.layer_blocks.i``); SSD: its two finest feature maps
    (``backbone.features`` and ``backbone.extra.0``; SSDlite: its two feature stages);
    ultralytics YOLO: the maps its detection head reads.
    """
    modules = dict(model.named_modules())
    blocks = modules.get("backbone.fpn.layer_blocks")
    if isinstance(blocks, nn.ModuleList) and len(blocks):
        return [f"backbone.fpn.layer_blocks.{i}" for i in range(len(blocks))]
    if type(model).__name__ == "SSD":
        if type(modules.get("backbone")).__name__ == "SSDLiteFeatureExtractorMobileNet":
            return ["backbone.features.0", "backbone.features.1"]  # run one by one
        if {"backbone.features", "backbone.extra.0"} <= set(modules):
            return ["backbone.features", "backbone.extra.0"]
    for name, module in modules.items():
        if type(module).__name__ in ("Detect", "v10Detect", "YOLOEDetect") and hasattr(module, "f"):
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            prefix = f"{parent}." if parent else ""
            return [f"{prefix}{index}" for index in module.f]
    return None
