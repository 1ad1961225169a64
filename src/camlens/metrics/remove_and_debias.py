"""ROAD: RemOve And Debias (Rong et al. 2022, arXiv:2202.00449).

Pixels are removed by the map, most relevant first (MoRF) or least relevant first (LeRF), and
filled by noisy linear imputation, so that the model cannot read the shape of the removed region
from the fill. Each removed pixel becomes the weighted mean of its 8 neighbours (1/6 for the
4 direct ones, 1/12 for the diagonals, renormalised at the border), all removed pixels at once:
a sparse linear system, solved with scipy, then Gaussian noise of standard deviation ``noise``
is added to the filled pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from camlens import targets as targets_
from camlens.errors import CamlensValueError
from camlens.metrics.faithfulness import pixel_ranks, prepare

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
ORDERS = ("morf", "lerf")
# (row offset, column offset, weight) of the neighbours in the imputation (Rong et al. 2022).
NEIGHBOURS = (
    (-1, -1, 1 / 12),
    (-1, 0, 1 / 6),
    (-1, 1, 1 / 12),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (1, 1, 1 / 12),
)


def _scipy_sparse():
    try:
        from scipy import sparse
        from scipy.sparse import linalg
    except ImportError as error:  # pragma: no cover - scipy ships with the metrics extra
        raise CamlensValueError(
            "ROAD's imputation solves a sparse linear system with scipy; install it with "
            "pip install 'camlens[metrics]'"
        ) from error
    return sparse, linalg


def noisy_linear_impute(
    image: torch.Tensor,
    removed: torch.Tensor,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Fill the ``removed`` pixels (H, W) bool of ``image`` (C, H, W) by noisy linear
    imputation (Rong et al. 2022).

    For every removed pixel i with in-image neighbours :math:`\mathcal{N}(i)` and weights
    :math:`w_{ij}` (1/6 direct, 1/12 diagonal):

    .. math:: \Big(\sum_{j \in \mathcal{N}(i)} w_{ij}\Big) v_i
       - \sum_{j \in \mathcal{N}(i)\ \mathrm{removed}} w_{ij} v_j
       = \sum_{j \in \mathcal{N}(i)\ \mathrm{kept}} w_{ij} x_j

    then :math:`v_i \leftarrow v_i + \epsilon_i`, :math:`\epsilon \sim \mathcal{N}(0,
    \mathrm{noise}^2)` drawn from ``generator`` as one (C, n) tensor (n removed pixels in
    row-major order; the draw pytorch-grad-cam makes). Returns a new float32 tensor on the
    image's device.
    """
    sparse, linalg = _scipy_sparse()
    channels, height, width = image.shape
    values = image.detach().float().cpu().numpy().reshape(channels, -1).astype(np.float64)
    hole = removed.detach().cpu().numpy().reshape(-1).astype(bool)
    unknown = np.flatnonzero(hole)
    count = unknown.size
    out = image.detach().float().clone()
    if count == 0:
        return out
    variable = np.full(hole.size, -1, dtype=np.int64)
    variable[unknown] = np.arange(count)
    rows, cols = np.divmod(unknown, width)
    diagonal = np.zeros(count)
    right = np.zeros((count, channels))
    entries_i, entries_j, entries_w = [], [], []
    for dr, dc, weight in NEIGHBOURS:
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        here = np.flatnonzero(inside)
        neighbour = r[inside] * width + c[inside]
        diagonal[here] += weight
        missing = hole[neighbour]
        entries_i.append(here[missing])
        entries_j.append(variable[neighbour[missing]])
        entries_w.append(np.full(int(missing.sum()), -weight))
        right[here[~missing]] += weight * values[:, neighbour[~missing]].T
    matrix = sparse.csc_matrix(
        (
            np.concatenate([diagonal, *entries_w]),
            (
                np.concatenate([np.arange(count), *entries_i]),
                np.concatenate([np.arange(count), *entries_j]),
            ),
        ),
        shape=(count, count),
    )
    solution = np.asarray(linalg.spsolve(matrix, right)).reshape(count, channels)
    filled = torch.from_numpy(solution.T.astype(np.float32))
    if noise:
        filled = filled + noise * torch.randn((channels, count), generator=generator)
    flat = out.reshape(channels, -1)
    flat[:, torch.from_numpy(unknown).to(out.device)] = filled.to(out.device)
    return out


def removed_count(pixels: int, percentile: float) -> int:
    """Pixels removed at ``percentile`` percent: those at or above the map's (100 - p)-th
    percentile (linear interpolation, as ``numpy.percentile``) for continuous maps, that is
    ``n - ceil((1 - p/100)(n - 1))``."""
    kept = Fraction(100) - Fraction(percentile)
    return pixels - math.ceil(kept * (pixels - 1) / 100)


def road(
    model: Any,
    x: Any,
    maps: Any,
    target: targets_.Target = None,
    order: str = "morf",
    percentiles: Sequence[float] = PERCENTILES,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    batch_size: int = 32,
    return_curves: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""ROAD (Rong et al. 2022, arXiv:2202.00449): the explained class's softmax probability
    after removing ``p`` percent of the pixels, for each p in ``percentiles``, averaged.

    ``order="morf"`` removes the most relevant pixels first (lower is more faithful),
    ``"lerf"`` the least relevant first (higher is more faithful). Pixels are ranked by the map
    (ties by pixel index); :func:`removed_count` says how many go at each percentile (as
    pytorch-grad-cam's ``ROADMostRelevantFirst(percentile=100 - p)``), and they are filled by
    :func:`noisy_linear_impute`. Returns (B,) means over the percentiles, and the curves
    (B, P) too with ``return_curves``.
    """
    if order not in ORDERS:
        raise CamlensValueError(f"order must be 'morf' or 'lerf', got {order!r}")
    levels = [float(p) for p in percentiles]
    if not levels or any(not 0 <= p <= 100 for p in levels):
        raise CamlensValueError(
            f"percentiles must be a non-empty sequence of numbers in [0, 100], got {percentiles!r}"
        )
    batch = prepare(model, x, maps, target, batch_size)
    ranks = pixel_ranks(batch.maps)
    pixels = ranks[0].numel()
    images = []
    for index in range(batch.x.shape[0]):
        for level in levels:
            count = removed_count(pixels, level)
            hole = ranks[index] < count if order == "morf" else ranks[index] >= pixels - count
            images.append(noisy_linear_impute(batch.x[index], hole, noise, generator))
    stack = torch.stack(images)
    owners = torch.arange(stack.shape[0]) // len(levels)

    def build(begin: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        return stack[begin:stop], owners[begin:stop]

    curves = batch.run(build, stack.shape[0]).reshape(-1, len(levels))
    means = curves.mean(dim=1)
    return (means, curves) if return_curves else means
