"""The result of every method: :class:`Explanation`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from camlens.visualize.display import to_html, to_png


@dataclass
class Explanation:
    """Maps for a batch of images, with what was explained.

    Attributes:
        maps: float32 (B, H, W) in [0, 1] at the input's resolution, on the CPU (raw values at the
            input's resolution when the method ran with ``normalize=False``); (B, T, H, W) for
            clips and volumes (B, C, T, H, W), scaled per clip. NaN for an image whose logits
            hold NaN or inf (a CamlensWarning names it).
        raw: float32 (B, h, w) at the layer's resolution (the input's for pixel-space methods),
            signed: before the final ReLU; (B, t, h, w) for clips and volumes.
        targets: int64 (B,) the class explained for each image (-1 for a callable target, such as
            ``camlens.targets.segmentation`` or ``.detection``).
        scores: float32 (B,) the explained score (pre-softmax logit).
        probs: float32 (B,) softmax probability of that class (sigmoid for a one-logit head, NaN
            for a callable target).
        layer: the resolved layer name (names joined by "+" when several layers are fused, "" for
            pixel-space methods).
        method: the registry name of the method.
        extra: method-specific results (per-layer maps, channel weights, attributions...).
        inputs: float32 (B, C, H, W) the explained batch as the model took it, on the CPU (for
            display: a notebook shows an Explanation as original | heatmap | overlay per image),
            or None; with several targets per image, row m is a copy of image ``index[m]``.
        index: int64 (M,) the input image each map belongs to: ``arange(B)`` for one target per
            image; with several targets per image (``"top3"``, ``"above:0.5"``, one list per
            image) M maps, image by image.
    """

    maps: torch.Tensor
    raw: torch.Tensor
    targets: torch.Tensor
    scores: torch.Tensor
    probs: torch.Tensor
    layer: str
    method: str
    extra: dict[str, Any] = field(default_factory=dict)
    inputs: torch.Tensor | None = field(default=None, repr=False, compare=False)
    index: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))

    def __post_init__(self) -> None:
        if self.index.numel() == 0 and len(self.maps):
            self.index = torch.arange(len(self.maps))

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def __repr__(self) -> str:
        return (
            f"Explanation(method={self.method!r}, layer={self.layer!r}, "
            f"maps={tuple(self.maps.shape)}, raw={tuple(self.raw.shape)}, "
            f"targets={self.targets.tolist()})"
        )

    def _repr_html_(self) -> str:
        return to_html(self)

    def _repr_png_(self) -> bytes | None:
        return to_png(self)
