"""The base classes every method builds on.

:class:`Explainer` owns the adapter, layer resolution, target handling and the shared ending
``maps = minmax(upsample(relu(raw)))``. :class:`LayerMethod` is the CAM family: one capture of
activations A (and gradients G = dy/dA), then ``raw = combine(A, G)`` per layer; several layers are
fused by averaging their rectified, min-max scaled maps at the finest layer's resolution (as
pytorch-grad-cam does). A method overrides one small function.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from camlens.backends import adapter_for
from camlens.backends.torch import Capture
from camlens.errors import CamlensTypeError
from camlens.explanation import Explanation
from camlens.maps import UPSAMPLE_MODES, finalize, minmax, upsample
from camlens.targets import Target


class Explainer:
    """A reusable explainer: ``Method(model, layer="auto", **options)(x, target=None)``.

    Options shared by every method: ``relu`` (rectify before upsampling, default True),
    ``upsample`` ("bilinear", "bicubic" or "nearest") and ``normalize`` (min-max to [0, 1]).
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    uses_layer: ClassVar[bool] = True

    def __init__(
        self,
        model: Any,
        layer: Any = "auto",
        *,
        relu: bool = True,
        upsample: str = "bilinear",
        normalize: bool = True,
    ) -> None:
        self.adapter = adapter_for(model)
        self.model = model
        self.layer = layer
        self.relu = relu
        if upsample not in UPSAMPLE_MODES:
            from camlens.errors import CamlensValueError

            raise CamlensValueError(
                f"upsample must be one of {', '.join(UPSAMPLE_MODES)}, got {upsample!r}"
            )
        self.upsample = upsample
        self.normalize = normalize
        for flag, value in (("relu", relu), ("normalize", normalize)):
            if not isinstance(value, bool):
                raise CamlensTypeError(f"{flag} must be True or False, got {value!r}")

    def __call__(self, x: Any, target: Target = None) -> Explanation:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer={self.layer!r})"

    def _finish(
        self, raw: torch.Tensor, x: Any, capture: Capture, layer: str, **extra: Any
    ) -> Explanation:
        """Build the Explanation from a raw (B, h, w) map."""
        size = self.adapter.input_size(x)
        maps = finalize(raw, size, relu=self.relu, mode=self.upsample, normalize=self.normalize)
        return Explanation(
            maps=maps,
            raw=raw.detach().float().cpu(),
            targets=capture.target.indices.clone(),
            scores=capture.scores,
            probs=capture.probs,
            layer=layer,
            method=self.name,
            extra=extra,
        )


class LayerMethod(Explainer):
    """The CAM family: ``raw = combine(A, G)`` at one or more layers."""

    needs_gradients: ClassVar[bool] = True
    needs_head: ClassVar[bool] = False

    def combine(
        self, activations: torch.Tensor, gradients: torch.Tensor | None, capture: Capture
    ) -> torch.Tensor:
        """(B, C, h, w) activations and gradients -> raw map (B, h, w)."""
        raise NotImplementedError

    def __call__(self, x: Any, target: Target = None) -> Explanation:
        names = self.adapter.resolve_layers(self.layer, x)
        capture = self.adapter.capture(
            x, names, target, gradients=self.needs_gradients, head=self.needs_head
        )
        grads = capture.gradients or [None] * len(names)
        raws = [self.combine(a, g, capture) for a, g in zip(capture.activations, grads)]
        raw = raws[0] if len(raws) == 1 else fuse(raws, relu=self.relu)
        extra = {"layers": dict(zip(names, raws))} if len(raws) > 1 else {}
        return self._finish(raw, x, capture, "+".join(names), **extra)


def fuse(raws: list[torch.Tensor], relu: bool = True) -> torch.Tensor:
    """Average of per-layer maps, each rectified and min-max scaled at the finest resolution."""
    height, width = max((tuple(r.shape[1:]) for r in raws), key=lambda s: s[0] * s[1])
    scaled = [minmax(upsample(r.clamp_min(0) if relu else r, (height, width))) for r in raws]
    return torch.stack(scaled).mean(dim=0)
