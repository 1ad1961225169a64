"""Evaluating explanations: faithfulness, localisation and sanity checks.

``from camlens import metrics``; every function takes maps (B, H, W) or an
:class:`~camlens.Explanation` and returns per-image float32 tensors on the CPU.
"""

from camlens.metrics.faithfulness import (
    auc,
    average_drop,
    deletion,
    gaussian_blur,
    increase_in_confidence,
    insertion,
)
from camlens.metrics.localisation import (
    box_iou,
    energy_pointing_game,
    localisation_error,
    pointing_game,
)
from camlens.metrics.remove_and_debias import noisy_linear_impute, road
from camlens.metrics.sanity import SanityResult, plot_sanity, sanity_check, spearman, ssim

__all__ = [
    "SanityResult",
    "auc",
    "average_drop",
    "box_iou",
    "deletion",
    "energy_pointing_game",
    "gaussian_blur",
    "increase_in_confidence",
    "insertion",
    "localisation_error",
    "noisy_linear_impute",
    "plot_sanity",
    "pointing_game",
    "road",
    "sanity_check",
    "spearman",
    "ssim",
]
