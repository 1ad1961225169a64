"""The contract between methods and framework adapters.

Methods only talk to an adapter through these calls, and only receive torch tensors. Inputs are
"canonical" inside the methods: float32 torch tensors (B, C, H, W) on the model's device, whatever
layout the framework uses (a Keras adapter transposes its (B, H, W, C) batches).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from camlens.backends.torch_layers import LayerInfo
from camlens.targets import Target


class Adapter(Protocol):
    """What every framework adapter provides (see :class:`camlens.backends.torch.TorchAdapter`)."""

    framework: str

    def input_size(self, x: Any) -> tuple[int, int]:
        """Spatial size (H, W) of a native input batch."""

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
