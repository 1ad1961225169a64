"""Turning a raw map at the layer's resolution into the map shown: rectify, upsample, min-max.

``maps = minmax(upsample(relu(raw)))`` per image. A constant map becomes all zeros, never NaN, and
no epsilon is added anywhere, so maps of tiny magnitude (1e-11) keep their exact shape. Maps of
clips and volumes are (B, T, H, W): upsampled trilinearly and min-max scaled per clip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from camlens.errors import CamlensValueError

UPSAMPLE_MODES = ("bilinear", "bicubic", "nearest")


def check_batch(maps: torch.Tensor, name: str = "maps", volumes: bool = False) -> None:
    """Raise unless ``maps`` is a (B, H, W) tensor ((B, T, H, W) too with ``volumes``)."""
    ranks = (3, 4) if volumes else (3,)
    if not isinstance(maps, torch.Tensor) or maps.ndim not in ranks:
        shape = tuple(maps.shape) if hasattr(maps, "shape") else type(maps).__name__
        expected = "(B, H, W) or (B, T, H, W)" if volumes else "(B, H, W)"
        raise CamlensValueError(f"expected {name} of shape {expected}, got {shape}")


def as_heatmaps(heatmap: Any, name: str = "heatmap") -> torch.Tensor:
    """A map (H, W) or a batch (B, H, W) (tensor or array) as float32 on the CPU, NaN as 0."""
    values = torch.as_tensor(
        np.asarray(heatmap) if not isinstance(heatmap, torch.Tensor) else heatmap
    )
    if values.ndim not in (2, 3):
        raise CamlensValueError(
            f"expected {name} of shape (H, W) or (B, H, W), got {tuple(values.shape)}"
        )
    return torch.nan_to_num(values.detach().float().cpu())


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map of a (B, H, W) batch (or each clip of a (B, T, H, W) batch) to [0, 1]; a
    constant map becomes zeros."""
    check_batch(maps, volumes=True)
    dims = tuple(range(1, maps.ndim))
    low = maps.amin(dim=dims, keepdim=True)
    span = maps.amax(dim=dims, keepdim=True) - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (maps - low) / safe, torch.zeros_like(maps))


def upsample(maps: torch.Tensor, size: tuple[int, ...], mode: str = "bilinear") -> torch.Tensor:
    """Resize a (B, h, w) batch to ``size`` = (H, W) (``align_corners=False``); a (B, t, h, w)
    batch to (T, H, W), trilinearly ("nearest" stays nearest)."""
    check_batch(maps, volumes=True)
    if mode not in UPSAMPLE_MODES:
        raise CamlensValueError(
            f"upsample must be one of {', '.join(UPSAMPLE_MODES)}, got {mode!r}"
        )
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    if maps.ndim == 4 and mode != "nearest":
        mode = "trilinear"
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(maps[:, None], size=tuple(size), mode=mode, **kwargs)[:, 0]


def finalize(
    raw: torch.Tensor,
    size: tuple[int, ...],
    *,
    relu: bool = True,
    mode: str = "bilinear",
    normalize: bool = True,
) -> torch.Tensor:
    """The shown map: ``minmax(upsample(relu(raw)))``, float32 on the CPU."""
    maps = raw.float().clamp_min(0) if relu else raw.float()
    maps = upsample(maps, size, mode)
    if normalize:
        maps = minmax(maps)
    return maps.cpu()
