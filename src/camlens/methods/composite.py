r"""Methods built from another method: Finer-CAM explains a contrast of class scores with a
gradient CAM (``base="gradcam"``); RefineCAM multiplies one CAM method's maps at several layers
(``base="gradcam++"``).

Finer-CAM (Zhang et al. 2025, arXiv:2501.11309) replaces the target's score :math:`y_c` by its
difference from the :math:`T` classes :math:`d_1..d_T` whose logits are closest to :math:`y_c`:

.. math:: s = \sum_{t=1}^{T} w_t\,(y_c - \alpha\, y_{d_t}), \qquad
   w = \operatorname{softmax}(y_{d_1}, \dots, y_{d_T}) \ \text{(``weighting="softmax"``)}
   \ \text{or}\ w_t = 1/T \ \text{(``"mean"``)}

and runs the base method on :math:`s` (the gradient flows through the softmax weights too, as in
pytorch-grad-cam's ``FinerWeightedTarget``; ``"mean"`` is TorchCAM's
:math:`y_c - \gamma\,\tfrac1T\sum_t y_{d_t}`).

RefineCAM (Domeniconi et al. 2026, "How to Evaluate and Refine your CAM", arXiv:2605.14641) runs
the base method at layers :math:`l = 1..n` and multiplies their rectified maps, each upsampled
bilinearly
(:math:`U`) to the input's grid and min-max scaled there (``resolution="input"``, as
pytorch-grad-cam), or min-max scaled and then upsampled to the finest layer's grid (``"layer"``, as
TorchCAM):

.. math:: L = \prod_{l=1}^{n} \operatorname{minmax}\big(U(\mathrm{relu}(L_l))\big)
   \quad\text{or}\quad L = \prod_{l=1}^{n} U\big(\operatorname{minmax}(\mathrm{relu}(L_l))\big)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from camlens import targets as targets_
from camlens.errors import CamlensTypeError, CamlensValueError, check_choice, describe
from camlens.maps import minmax, upsample
from camlens.methods._registry import get, register
from camlens.methods.base import Explainer, LayerMethod, Step
from camlens.targets import Target

#: How Finer-CAM weighs its comparison classes.
WEIGHTINGS = ("softmax", "mean")
#: Where RefineCAM multiplies its layers' maps.
RESOLUTIONS = ("input", "layer")


def nearest_classes(logits: torch.Tensor, indices: torch.Tensor, k: int) -> torch.Tensor:
    """The (B, k) classes whose logits are closest to each image's target logit, the target
    excluded, nearest first (``k`` capped at the number of other classes)."""
    own = logits.gather(1, indices[:, None])
    distance = (logits - own).abs().scatter(1, indices[:, None], math.inf)
    return distance.topk(min(k, logits.shape[1] - 1), dim=1, largest=False).indices


@dataclass
class Contrast:
    """Finer-CAM's target: ``logits -> (B,)`` contrast scores; keeps the classes it compared."""

    target: Target
    alpha: float
    k: int
    weighting: str
    compare: tuple[int, ...] | None = None
    references: torch.Tensor | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] < 2:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else describe(logits)
            raise CamlensValueError(
                f"finercam compares class scores: it needs logits (B, classes) with 2 or more "
                f"classes, got {shape}"
            )
        logits = logits.float()
        indices = targets_.resolve(self.target, logits.detach()).indices.to(logits.device)
        references = self._references(logits.detach(), indices)
        self.references = references.cpu()
        own = logits.gather(1, indices[:, None])
        others = logits.gather(1, references)
        if self.weighting == "softmax":
            weights = others.softmax(dim=1)
        else:
            weights = torch.full_like(others, 1.0 / others.shape[1])
        return (weights * (own - self.alpha * others)).sum(dim=1)

    def _references(self, logits: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if self.compare is None:
            return nearest_classes(logits, indices, self.k)
        classes = logits.shape[1]
        if any(c < 0 or c >= classes for c in self.compare):
            raise CamlensValueError(
                f"compare holds classes outside 0..{classes - 1}: {list(self.compare)}"
            )
        if any(int(i) in self.compare for i in indices):
            raise CamlensValueError(
                f"compare must not hold the explained class, got compare={list(self.compare)} "
                f"and targets {indices.tolist()}"
            )
        return torch.tensor(self.compare, device=logits.device).expand(len(indices), -1)


def base_method(
    name: str, model: Any, layer: Any, relu: bool, gradients: bool = True
) -> LayerMethod:
    """An instance of the registered CAM method ``name`` (a gradient CAM where ``gradients``)."""
    cls = get(name)
    if not (issubclass(cls, LayerMethod) and (cls.needs_gradients or not gradients)):
        kind = "a gradient CAM method" if gradients else "a CAM method"
        raise CamlensValueError(
            f"base must name {kind} (such as 'gradcam', 'gradcam++', 'layercam'), got {name!r}"
        )
    return cls(model, layer, relu=relu)


@register("finercam", "finer-cam")
class FinerCAM(Explainer):
    r"""Finer-CAM: the base gradient CAM of :math:`s = \sum_t w_t (y_c - \alpha y_{d_t})`, the
    :math:`d_t` the ``k`` classes with logits nearest :math:`y_c` (or the classes ``compare``),
    :math:`w` their softmax (``weighting="softmax"``) or :math:`1/k` (``"mean"``)."""

    paper = "Zhang et al. 2025, Finer-CAM (arXiv:2501.11309)"
    smoothable = True

    def __init__(
        self,
        model: Any,
        layer: Any = "auto",
        *,
        base: str = "gradcam",
        alpha: float = 1.0,
        k: int = 3,
        weighting: str = "softmax",
        compare: Any = None,
        **options: Any,
    ) -> None:
        super().__init__(model, layer, **options)
        self.base = base_method(base, model, layer, self.relu)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise CamlensTypeError(f"alpha must be a number, got {describe(alpha)}")
        if not math.isfinite(alpha) or alpha < 0:
            raise CamlensValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise CamlensValueError(f"k must be a positive int, got {k!r}")
        check_choice(weighting, WEIGHTINGS, "weighting")
        self.alpha = float(alpha)
        self.k = k
        self.weighting = weighting
        self.compare = _classes(compare)

    def _step(self, x: Any, target: Target) -> Step:
        if callable(target) and not isinstance(target, torch.Tensor):
            raise CamlensValueError(
                "finercam contrasts a class with its neighbours: target must be None, an int or "
                f"a sequence of ints, got {describe(target)}"
            )
        contrast = Contrast(target, self.alpha, self.k, self.weighting, self.compare)
        step = self.base._step(x, contrast)
        logits = step.capture.logits
        resolved = targets_.resolve(target, logits)
        capture = replace(
            step.capture,
            target=resolved,
            scores=targets_.scores(logits, resolved).detach().float().cpu(),
            probs=targets_.probabilities(logits, resolved),
        )
        return Step(step.raw, capture, step.layer, {**step.extra, "compared": contrast.references})

    def __repr__(self) -> str:
        return (
            f"FinerCAM(layer={self.layer!r}, base={self.base.name!r}, alpha={self.alpha}, "
            f"k={self.k}, weighting={self.weighting!r})"
        )


def _classes(compare: Any) -> tuple[int, ...] | None:
    """``compare`` as a tuple of class indices (None stays None)."""
    if compare is None:
        return None
    values = [compare] if isinstance(compare, int) else compare
    if (
        isinstance(compare, (bool, str))
        or not isinstance(values, (list, tuple))
        or not values
        or any(isinstance(c, bool) or not isinstance(c, int) for c in values)
    ):
        raise CamlensTypeError(f"compare must be a class index or a list of them, got {compare!r}")
    return tuple(values)


def refine(
    raws: list[torch.Tensor], size: tuple[int, ...] | None, relu: bool = True
) -> torch.Tensor:
    """The product of the (B, h, w) maps ``raws``, each rectified (``relu``), min-max scaled and
    upsampled to ``size``: scaled after upsampling (pytorch-grad-cam's order), or, where ``size``
    is None, scaled at its own grid and upsampled to the finest map's (TorchCAM's)."""
    rectified = [r.clamp_min(0) if relu else r for r in raws]
    if size is not None:
        scaled = [minmax(upsample(r, size)) for r in rectified]
    else:
        finest = max((tuple(r.shape[1:]) for r in raws), key=lambda s: torch.Size(s).numel())
        scaled = [upsample(minmax(r), finest) for r in rectified]
    return torch.stack(scaled).prod(dim=0)


def stage_ends(adapter: Any, x: Any, count: int = 3) -> list[str]:
    """``layer="auto"`` for RefineCAM: the "auto" layer and the last layers of the ``count - 1``
    stages before it (a stage: the layers sharing one spatial grid), earliest first; ResNet's
    ``layer2``, ``layer3``, ``layer4``. A detector keeps its fused feature maps."""
    names = adapter.resolve_layers("auto", x)
    if len(names) > 1:
        return names
    infos, _ = adapter.layers(x)
    order = [info.name for info in infos]
    if names[0] not in order:
        return names
    last = order.index(names[0])
    grids = [infos[last].layout.grid]
    picked = [names[0]]
    for info in reversed(infos[:last]):
        if len(picked) == count:
            break
        grid = info.layout.grid
        if len(grid) == len(grids[-1]) and math.prod(grid) > math.prod(grids[-1]):
            grids.append(grid)
            picked.append(info.name)
    return picked[::-1]


@register("refinecam", "refine-cam")
class RefineCAM(Explainer):
    r"""RefineCAM: the product of the base CAM's rectified, min-max scaled maps at several layers,
    :math:`L = \prod_l \operatorname{minmax}(U(\mathrm{relu}(L_l)))` at the input's resolution
    (``resolution="input"``) or :math:`\prod_l U(\operatorname{minmax}(\mathrm{relu}(L_l)))` at
    the finest layer's (``"layer"``); ``layer="auto"`` takes the last layer of each of the last
    three stages (ResNet's ``layer2``, ``layer3``, ``layer4``)."""

    paper = "Domeniconi et al. 2026, How to Evaluate and Refine your CAM (arXiv:2605.14641)"
    smoothable = True

    def __init__(
        self,
        model: Any,
        layer: Any = "auto",
        *,
        base: str = "gradcam++",
        resolution: str = "input",
        **options: Any,
    ) -> None:
        super().__init__(model, layer, **options)
        self.base = base_method(base, model, layer, self.relu, gradients=False)
        if self.smooth and not self.base.needs_gradients:
            raise CamlensValueError(
                f"smooth={self.smooth} averages gradients over noisy copies, but base {base!r} "
                "uses no gradients; drop smooth or pick a gradient base"
            )
        check_choice(resolution, RESOLUTIONS, "resolution")
        self.resolution = resolution

    def _step(self, x: Any, target: Target) -> Step:
        if self.layer == "auto":
            names = stage_ends(self.adapter, x)
        else:
            names = self.adapter.resolve_layers(self.layer, x)
        self.base.layer = names
        step = self.base._step(x, target)
        raws = list(step.extra["layers"].values()) if len(names) > 1 else [step.raw]
        size = self.adapter.input_size(x) if self.resolution == "input" else None
        raw = refine(raws, size, self.relu)
        return Step(raw, step.capture, step.layer, {"layers": dict(zip(names, raws))})

    def __repr__(self) -> str:
        return f"RefineCAM(layer={self.layer!r}, base={self.base.name!r})"
