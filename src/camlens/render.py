"""Colouring maps and blending them over images (numpy only at this output boundary)."""

from __future__ import annotations

import numpy as np
import torch

from camlens.errors import CamlensValueError
from camlens.io import ImageLike, to_rgb
from camlens.maps import upsample

# Matplotlib's "jet" as piecewise-linear segments: (x, value) per channel.
_JET = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}


def colormap_table(name: str = "jet") -> np.ndarray:
    """A (256, 3) float table in [0, 1] for a colormap name (matplotlib's when installed)."""
    if name == "jet":
        x = np.linspace(0.0, 1.0, 256)
        return np.stack(
            [np.interp(x, *zip(*_JET[channel])) for channel in ("red", "green", "blue")], axis=1
        )
    try:
        import matplotlib
    except ImportError as error:
        raise CamlensValueError(
            f"colormap {name!r} needs matplotlib (pip install matplotlib); 'jet' works without"
        ) from error
    if name not in matplotlib.colormaps:
        raise CamlensValueError(
            f"unknown colormap {name!r}; valid names include: "
            + ", ".join(sorted(matplotlib.colormaps)[:40])
        )
    return matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]


def colorize(heatmap: torch.Tensor | np.ndarray, colormap: str = "jet") -> np.ndarray:
    """A map (H, W) in [0, 1] as uint8 RGB (H, W, 3)."""
    values = torch.as_tensor(heatmap).detach().float().cpu().numpy()
    if values.ndim != 2:
        raise CamlensValueError(f"expected heatmap of shape (H, W), got {values.shape}")
    index = np.clip(np.nan_to_num(values) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return (colormap_table(colormap)[index] * 255.0 + 0.5).astype(np.uint8)


def overlay(
    image: ImageLike,
    heatmap: torch.Tensor | np.ndarray,
    colormap: str = "jet",
    alpha: float = 0.5,
    threshold: float | None = None,
) -> np.ndarray:
    """Blend a coloured heatmap over ``image``; returns uint8 RGB at the image's own size.

    ``out = (1 - a) * image + a * colour(heatmap)`` where ``a = alpha``; with ``threshold``, pixels
    whose heatmap value is below it keep the plain image (the MURA tutorial's ``cam < 0.2``).
    """
    if not 0.0 <= alpha <= 1.0:
        raise CamlensValueError(f"alpha must be in [0, 1], got {alpha}")
    picture = to_rgb(image)
    values = torch.as_tensor(heatmap).detach().float().cpu()
    if values.ndim != 2:
        raise CamlensValueError(f"expected heatmap of shape (H, W), got {tuple(values.shape)}")
    height, width = picture.shape[:2]
    values = upsample(values[None], (height, width))[0].clamp(0, 1)
    colour = colorize(values, colormap).astype(np.float32)
    weight = np.full((height, width, 1), alpha, dtype=np.float32)
    if threshold is not None:
        weight[values.numpy() < threshold] = 0.0
    blended = (1.0 - weight) * picture.astype(np.float32) + weight * colour
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
