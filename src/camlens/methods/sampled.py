"""Score-CAM over several perturbed mask sets: SS-CAM (noise) and IS-CAM (integrated scaling).

Both are TorchCAM 0.5's formulas, with Score-CAM's batched, precision-aware masked forwards.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from camlens import targets as targets_
from camlens.errors import CamlensTypeError, CamlensValueError
from camlens.maps import minmax
from camlens.methods._registry import register
from camlens.methods.perturbation import ScoreCAM


def _times(xc: torch.Tensor, images: torch.Tensor, masks: torch.Tensor) -> Any:
    """The function building rows ``rows``: image ``images[row]`` times mask ``masks[row]``."""
    return lambda rows: xc[images[rows]] * masks[rows]


class _SampledScoreCAM(ScoreCAM):
    r"""Score-CAM averaged over ``num_samples`` perturbed mask sets, as TorchCAM computes it: each
    channel min-max scaled at the layer's resolution, upsampled (``align_corners=False``), then
    changed per sample (:meth:`sample`); the weights are the softmax of the mean score."""

    default_samples = 1

    def __init__(
        self, model: Any, layer: Any = "auto", *, num_samples: int | None = None, **options: Any
    ) -> None:
        super().__init__(model, layer, **options)
        num_samples = self.default_samples if num_samples is None else num_samples
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise CamlensValueError(f"num_samples must be a positive int, got {num_samples!r}")
        self.num_samples = num_samples

    def sample(self, masks: torch.Tensor, index: int) -> torch.Tensor:
        """The (B, K, H, W) masks of sample ``index`` (0-based) from the upsampled channels."""
        raise NotImplementedError

    def masked_scores(
        self, xc: torch.Tensor, chosen: torch.Tensor, target: targets_.ResolvedTarget
    ) -> torch.Tensor:
        """Target scores (B, K), averaged over the samples, of the input masked by each channel:
        min-max scaled at the layer's grid, upsampled, then changed per sample."""
        batch, count = chosen.shape[:2]
        grid = chosen.shape[2:]
        scaled = minmax(chosen.reshape(batch * count, *grid)).reshape(chosen.shape)
        mode = "trilinear" if scaled.ndim == 5 else "bilinear"
        upsampled = F.interpolate(scaled, size=xc.shape[2:], mode=mode, align_corners=False)
        images = torch.arange(batch, device=xc.device).repeat_interleave(count)
        total = torch.zeros(batch * count, device=xc.device)
        self.start_sampling()
        for sample in range(self.num_samples):
            masks = self.sample(upsampled, sample).flatten(0, 1).unsqueeze(1)
            total += self.scored(xc, images, _times(xc, images, masks), target)
        return total.reshape(batch, count) / self.num_samples

    def start_sampling(self) -> None:
        """Reset any random state before the samples of one call."""


@register("sscam", "ss-cam")
class SSCAM(_SampledScoreCAM):
    r"""SS-CAM (Wang et al. 2020, arXiv:2006.14255), as TorchCAM 0.5 ``SSCAM`` computes it.

    Each channel, min-max scaled to :math:`\hat A^k \in [0, 1]` and upsampled (:math:`U`), gets
    Gaussian noise :math:`\delta_i \sim \mathcal N(0, \sigma^2)` at the input's resolution:

    .. math:: w_k = \operatorname{softmax}_k\Big(\frac1N \sum_{i=1}^N
       y^c\big(x \odot (U(\hat A^k) + \delta_i)\big)\Big), \qquad L = \sum_k w_k A^k

    ``num_samples`` (N, 35 in TorchCAM; 2 here: each sample costs one Score-CAM) and
    ``std`` (:math:`\sigma`, 2.0); ``seed`` fixes the draws (a CPU generator, one (B, K, H, W)
    draw per sample: the same numbers as TorchCAM after ``torch.manual_seed(seed)``).
    ``top_k_channels``, ``precision`` and ``batch_size`` as for Score-CAM.
    """

    paper = "Wang et al. 2020, SS-CAM (arXiv:2006.14255)"
    label = "SS-CAM"
    default_samples = 2

    def __init__(
        self, model: Any, layer: Any = "auto", *, std: float = 2.0, seed: int = 0, **options: Any
    ) -> None:
        super().__init__(model, layer, **options)
        if isinstance(std, bool) or not isinstance(std, (int, float)) or std < 0:
            raise CamlensValueError(f"std must be a non-negative number, got {std!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise CamlensTypeError(f"seed must be an int, got {seed!r}")
        self.std, self.seed = float(std), seed
        self.generator = torch.Generator()

    def start_sampling(self) -> None:
        assert self.seed is not None  # checked to be an int in __init__
        self.generator.manual_seed(self.seed)

    def sample(self, masks: torch.Tensor, index: int) -> torch.Tensor:
        """``masks`` plus one draw of N(0, std²), drawn as ``torch.distributions.Normal`` does."""
        loc = torch.zeros(()).expand(masks.shape)
        scale = torch.full((), self.std).expand(masks.shape)
        return masks + torch.normal(loc, scale, generator=self.generator).to(masks.device)


@register("iscam", "is-cam")
class ISCAM(_SampledScoreCAM):
    r"""IS-CAM (Naidu et al. 2020, arXiv:2010.03023), as TorchCAM 0.5 ``ISCAM`` computes it.

    The min-max scaled, upsampled channels :math:`U(\hat A^k)` are scaled by a growing
    coefficient, the scores averaged over the N steps (deterministic):

    .. math:: w_k = \operatorname{softmax}_k\Big(\frac1N \sum_{i=1}^N
       y^c\big(c_i\, x \odot U(\hat A^k)\big)\Big), \quad c_i = \sum_{j=1}^{i} \frac jN,
       \qquad L = \sum_k w_k A^k

    ``num_samples`` (N, 10 in TorchCAM; 2 here: each sample costs one Score-CAM);
    ``top_k_channels``, ``precision`` and ``batch_size`` as for Score-CAM.
    """

    paper = "Naidu et al. 2020, IS-CAM (arXiv:2010.03023)"
    label = "IS-CAM"
    default_samples = 2

    def sample(self, masks: torch.Tensor, index: int) -> torch.Tensor:
        r"""``masks`` times :math:`c_i = \sum_{j \le i} j / N` (TorchCAM's running sum)."""
        coefficient = 0.0
        for step in range(index + 1):
            coefficient += (step + 1) / self.num_samples
        return coefficient * masks
