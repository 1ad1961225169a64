"""ShapleyCAM (Cai 2025, arXiv:2501.06261): Grad-CAM's weights corrected by the second-order term
of a Taylor expansion of the target score, read as a Shapley value of the channels' activations.

With activations :math:`A^k`, gradients :math:`g^k = \\partial s / \\partial A^k` of the explained
score :math:`s` and the Hessian-vector product :math:`(H A)^k = \\sum_l
\\frac{\\partial^2 s}{\\partial A^k \\partial A^l} A^l` (a double backward pass, PyTorch models
only), see :class:`ShapleyCAM`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

import torch

from camlens import targets as targets_
from camlens.backends.base import Capture
from camlens.backends.torch import TorchAdapter
from camlens.errors import CamlensValueError, check_choice
from camlens.methods._registry import register
from camlens.methods.gradient import _GradientMethod, gradcam
from camlens.targets import Target

#: The scores ShapleyCAM can differentiate: the paper's ReST or the plain target score.
SCORES = ("rest", "logit")


def rest(target: Target) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""The Residual Softmax Target-class score (ReST) of the class ``target`` picks, as a callable
    target: :math:`s = y_c - \mathrm{CE}(y, c) = 2 y_c - \log \sum_j e^{y_j}` (the plain score
    :math:`y_c` for a one-logit model); pytorch-grad-cam's ``ClassifierOutputReST``."""

    def score(logits: torch.Tensor) -> torch.Tensor:
        plain = targets_.scores(logits, targets_.resolve(target, logits))
        if logits.shape[1] == 1:
            return plain
        return 2 * plain - logits.logsumexp(dim=1)

    return score


@register("shapleycam", "shapley-cam")
class ShapleyCAM(_GradientMethod):
    r"""ShapleyCAM (Cai 2025, arXiv:2501.06261): Grad-CAM with the gradient replaced by its
    second-order Shapley correction.

    .. math:: \alpha_k = \frac{1}{hw} \sum_{ij} \Big(g^k_{ij} - \tfrac12 (H A)^k_{ij}\Big),
       \qquad L = \sum_k \alpha_k A^k

    ``score="rest"`` (default, the paper's) differentiates :math:`s = 2 y_c - \log\sum_j e^{y_j}`
    (:func:`rest`) for class targets, ``score="logit"`` the target's logit :math:`y_c` (for which
    :math:`H A = 0` wherever the model is piecewise linear above the layer, so ShapleyCAM is
    Grad-CAM there); a callable target is differentiated as given. ``exp.scores`` are the target's
    logits either way. pytorch-grad-cam's ``ShapleyCAM`` with ``ClassifierOutputReST`` (or
    ``ClassifierOutputTarget``) computes the same map. PyTorch models only.
    """

    paper = "Cai 2025, CAMs as Shapley Value-based Explainers (arXiv:2501.06261)"
    autocasts = False  # the Hessian-vector product (a double backward) runs in float32
    function = staticmethod(gradcam)

    def __init__(self, model: Any, layer: Any = "auto", *, score: str = "rest", **options: Any):
        super().__init__(model, layer, **options)
        check_choice(score, SCORES, "score")
        if self.adapter.framework != "torch":
            raise CamlensValueError(
                f"method {self.name!r} (a Hessian-vector product) is implemented for PyTorch "
                "models only; use method='gradcam' for Keras models"
            )
        self.score = score

    def _capture(self, x: Any, names: list[str], target: Target) -> Capture:
        """Gradients :math:`g - \\tfrac12 H A` of the explained score, the target and scores of
        the class ``target`` picks."""
        differentiated = target
        if self.score == "rest" and not callable(target):
            differentiated = rest(target)
        adapter = cast(TorchAdapter, self.adapter)  # checked in __init__
        capture = adapter.capture(x, names, differentiated, hvp=True)
        assert capture.gradients is not None and capture.hvps is not None
        corrected = [g - 0.5 * h for g, h in zip(capture.gradients, capture.hvps)]
        if differentiated is target:
            return dataclasses.replace(capture, gradients=corrected)
        resolved = targets_.resolve(target, capture.logits)
        return dataclasses.replace(
            capture,
            gradients=corrected,
            target=resolved,
            scores=targets_.scores(capture.logits, resolved).float().cpu(),
            probs=targets_.probabilities(capture.logits, resolved),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer={self.layer!r}, score={self.score!r})"
