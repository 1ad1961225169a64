"""The forward hooks on an explained layer: keep its output (for gradients with respect to it) or
replace it (Ablation-CAM's masked activations); the gradients (and Hessian-vector products) of
the kept outputs. Each hook lives one call : :func:`hooked` registers hooks in ``try`` and
removes them in ``finally``.

The keeping hook hands the rest of the network a copy of the output, so an in-place op downstream
(DenseNet's ``F.relu(features, inplace=True)``) cannot rewrite what is explained; the network
below the layer runs without recording a graph and the hook switches recording on, so only the
part above the layer is kept for the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
import torch.nn as nn

from camlens.backends.base import Layout
from camlens.backends.torch_layers import main_tensor, replace_main
from camlens.errors import CamlensValueError

#: A forward hook, as ``register_forward_hook`` takes it.
Hook = Callable[[nn.Module, object, object], object]


@contextmanager
def hooked(pairs: Sequence[tuple[nn.Module, Hook]]) -> Iterator[None]:
    """Forward hooks on modules for the block: registered in ``try``, removed in ``finally``."""
    handles = []
    try:
        for module, hook in pairs:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


class Keeper:
    """Hooks keeping the outputs of ``layers`` (each must run once), as leaves that record
    gradients when ``gradients``."""

    def __init__(self, layers: Sequence[str], gradients: bool) -> None:
        self.layers = list(layers)
        self.gradients = gradients
        self.kept: list[torch.Tensor | None] = [None] * len(self.layers)

    def hook(self, index: int) -> Hook:
        """The hook for layer ``index``."""
        name = self.layers[index]

        def keep(module: nn.Module, args: object, output: object) -> object:
            tensor = main_tensor(output)
            if tensor is None:
                raise CamlensValueError(
                    f"layer {name!r} returns {type(output).__name__}, not a tensor"
                )
            if self.kept[index] is not None:
                raise CamlensValueError(
                    f"layer {name!r} runs more than once in a forward pass; pick a "
                    "module that runs once (camlens layers lists them)"
                )
            if self.gradients:
                torch.set_grad_enabled(True)
                if not tensor.requires_grad:
                    tensor = tensor.detach().requires_grad_()
            self.kept[index] = tensor
            return replace_main(output, tensor.clone())

        return keep

    def tensors(self) -> list[torch.Tensor]:
        """The kept outputs, in the order of ``layers``; raises if a layer did not run."""
        missing = [name for name, tensor in zip(self.layers, self.kept) if tensor is None]
        if missing:
            raise CamlensValueError(
                f"layer {missing[0]!r} did not run in the forward pass; pick a layer "
                "the model uses (camlens layers lists them)"
            )
        return [t for t in self.kept if t is not None]


def replacing(
    layer: str,
    layout_for: Callable[[torch.Tensor], Layout],
    activations: torch.Tensor,
    keep_original: bool,
    seen: list[torch.Tensor],
) -> Hook:
    """A hook replacing ``layer``'s output by the canonical (N, C, h, w) ``activations`` (after
    the original one when ``keep_original``); the original canonical output goes to ``seen``."""

    def hook(mod: nn.Module, args: object, output: object) -> object:
        tensor = main_tensor(output)
        if tensor is None:
            raise CamlensValueError(f"layer {layer!r} returns {type(output).__name__}")
        layout = layout_for(tensor)
        seen.append(layout.to_nchw(tensor).float())
        rows = activations.to(tensor.dtype)
        if keep_original:
            rows = torch.cat([layout.to_nchw(tensor).to(rows.dtype), rows])
        return replace_main(output, from_nchw(layout, rows, tensor))

    return hook


def from_nchw(layout: Layout, rows: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Canonical (N, C, h, w) rows in the native layout of ``original`` (batch 1 or N)."""
    if layout.kind in ("nchw", "ncthw"):
        return rows.contiguous()
    if layout.kind == "nhwc":
        return rows.permute(0, 2, 3, 1).contiguous()
    tokens = rows.flatten(2).transpose(1, 2)
    prefix = original[:1, : layout.prefix, :].expand(rows.shape[0], -1, -1)
    return torch.cat([prefix.to(tokens.dtype), tokens], dim=1)


def gradients_of(
    score: torch.Tensor, activations: list[torch.Tensor], first: str, graph: bool = False
) -> list[torch.Tensor]:
    """d(sum of ``score``)/d(each activation), zeros where one does not reach the score; with
    ``graph``, differentiable (for :func:`hvps_of`)."""
    if not score.requires_grad:
        raise CamlensValueError(f"the explained score does not depend on layer {first!r}")
    found = torch.autograd.grad(
        score.sum(), activations, allow_unused=True, create_graph=graph, retain_graph=graph
    )
    return [torch.zeros_like(a) if g is None else g for a, g in zip(activations, found)]


def hvps_of(grads: list[torch.Tensor], activations: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each layer's Hessian-vector product :math:`H A = \\partial (g \\cdot A) / \\partial A`
    with :math:`A` held constant, from differentiable gradients; zeros where :math:`g` does not
    depend on :math:`A` (a piecewise-linear model above the layer)."""
    found: list[torch.Tensor] = []
    for g, a in zip(grads, activations):
        hvp = None
        if g.requires_grad:
            try:
                (hvp,) = torch.autograd.grad(
                    g, a, grad_outputs=a.detach(), allow_unused=True, retain_graph=True
                )
            except RuntimeError as error:
                if "double backward" not in str(error):
                    raise
                raise CamlensValueError(
                    "a Hessian-vector product needs second derivatives, which an operation of "
                    f"the model lacks ({error}); use a first-order method such as 'gradcam'"
                ) from error
        found.append(torch.zeros_like(a) if hvp is None else hvp)
    return found


def math_sdpa(on: bool) -> AbstractContextManager[Any]:
    """With ``on``, attention through its math kernel, whose second derivative exists (a
    double backward pass through a fused kernel fails: CLIP towers, timm and Hugging Face
    ViTs); else nothing."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH]) if on else nullcontext()
