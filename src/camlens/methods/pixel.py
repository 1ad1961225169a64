"""Pixel-space methods: maps at the input's resolution from gradients with respect to the input.

Each pass keeps the signed per-channel attribution :math:`a \\in \\mathbb R^{B \\times C \\times H
\\times W}` in ``exp.extra["attribution"]``; ``exp.raw`` is the (B, H, W) map before normalisation:
:math:`\\max_c |a_c|` (Simonyan et al.'s reduction), except for Integrated Gradients, whose
:math:`\\sum_c a_c` keeps completeness. ``exp.layer`` is "" (Guided Grad-CAM: its Grad-CAM layer).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from camlens.backends.base import Capture
from camlens.errors import CamlensTypeError, CamlensValueError, describe
from camlens.maps import upsample
from camlens.methods._registry import register
from camlens.methods.base import Explainer, Step, auto_batch, fuse
from camlens.methods.gradient import gradcam
from camlens.targets import Target


def check_baseline(value: Any, name: str) -> Any:
    """``value`` if it is a number or a tensor (a baseline), else a clear error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise CamlensTypeError(f"{name} must be a number or a tensor, got {describe(value)}")
    return value


class PixelMethod(Explainer):
    """A map from one backward pass to the input: ``attribution = attribute(capture)``."""

    uses_layer: ClassVar[bool] = False
    smoothable: ClassVar[bool] = True
    guided: ClassVar[bool | str] = False
    autocasts: ClassVar[bool] = True

    def attribute(self, capture: Capture) -> torch.Tensor:
        """(B, C, H, W) signed attribution from the input and its gradient."""
        assert capture.gradients is not None
        return capture.gradients[0]

    def reduce(self, attribution: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) attribution -> (B, H, W) raw map: the largest magnitude over channels."""
        return attribution.abs().amax(dim=1)

    def _step(self, x: Any, target: Target) -> Step:
        capture = self.adapter.input_gradients(x, target, guided=self.guided)
        attribution = self.attribute(capture)
        return Step(self.reduce(attribution), capture, "", {}, attribution)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@register("saliency", "vanilla-gradient", "gradients")
class Saliency(PixelMethod):
    r"""Saliency (Simonyan et al. 2014, arXiv:1312.6034): the gradient's magnitude.

    .. math:: M_{ij} = \max_c \left|\frac{\partial y^c}{\partial x_{c,ij}}\right|
    """

    paper = "Simonyan et al. 2014, Deep Inside Convolutional Networks (arXiv:1312.6034)"


@register("guided-backprop", "guided-backpropagation", "guidedbackprop")
class GuidedBackprop(PixelMethod):
    r"""Guided backpropagation (Springenberg et al. 2015, arXiv:1412.6806).

    Every ReLU passes back only positive gradients at positive inputs,
    :math:`R^{l-1} = \mathbb 1[f^l > 0]\,\mathbb 1[R^l > 0]\,R^l`; ``nn.ReLU`` modules (in place
    too) and ``F.relu`` / ``torch.relu`` calls alike, the model untouched.
    :math:`M_{ij} = \max_c |R^0_{c,ij}|`.
    """

    paper = "Springenberg et al. 2015, Striving for Simplicity (arXiv:1412.6806)"
    guided = True


@register("guided-gradcam", "guided-grad-cam", "guidedgradcam")
class GuidedGradCAM(PixelMethod):
    r"""Guided Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391): guided backpropagation times
    the rectified Grad-CAM map upsampled to the input (``upsample``, bilinear by default).

    .. math:: a_c = R^0_c \odot \operatorname{up}\big(\mathrm{relu}(L_{\text{Grad-CAM}})\big),
       \qquad M_{ij} = \max_c |a_{c,ij}|

    Captum's ``GuidedGradCam`` with ``interpolate_mode="bilinear"`` computes the same attribution
    (its default is nearest).
    """

    paper = "Selvaraju et al. 2017, Grad-CAM (arXiv:1610.02391)"
    uses_layer = True
    guided = True

    def _step(self, x: Any, target: Target) -> Step:
        names = self.adapter.resolve_layers(self.layer, x)
        cam = self.adapter.capture(x, names, target)
        assert cam.gradients is not None
        raws = [gradcam(a, g) for a, g in zip(cam.activations, cam.gradients)]
        raw = raws[0] if len(raws) == 1 else fuse(raws)
        resolved = cam.target.function or cam.target.indices
        capture = self.adapter.input_gradients(x, resolved, guided=True)
        grads = capture.gradients[0]
        weight = upsample(raw.clamp_min(0), tuple(grads.shape[2:]), self.upsample)
        attribution = grads * weight[:, None].to(grads.device)
        return Step(self.reduce(attribution), capture, "+".join(names), {}, attribution)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer={self.layer!r})"


@register("smoothgrad", "smooth-grad")
class SmoothGrad(Saliency):
    r"""SmoothGrad (Smilkov et al. 2017, arXiv:1706.03825): saliency averaged over noisy copies.

    .. math:: \hat M = \frac1n \sum_{i=1}^{n} M\big(x + \mathcal N(0, \sigma^2)\big),
       \qquad \sigma = \text{noise}\,(\max x - \min x)

    ``samples=25``, ``noise=0.15``, ``seed`` for the noise (drawn like Captum's ``NoiseTunnel``,
    so the same seed gives the same copies), ``batch_size`` copies per pass. ``exp.raw`` averages
    the maps :math:`M`, ``exp.extra["attribution"]`` the signed gradients.
    """

    paper = "Smilkov et al. 2017, SmoothGrad (arXiv:1706.03825)"

    def __init__(self, model: Any, layer: Any = "auto", *, samples: int = 25, **options: Any):
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise CamlensValueError(f"samples must be a positive int, got {samples!r}")
        options.setdefault("smooth", samples)
        super().__init__(model, layer, **options)


@register("integrated-gradients", "integratedgradients", "ig")
class IntegratedGradients(PixelMethod):
    r"""Integrated Gradients (Sundararajan et al. 2017, arXiv:1703.01365), trapezoid rule.

    .. math:: a = (x - x') \odot \sum_{s=0}^{S-1} \omega_s\,
       \nabla y^c\big(x' + \tfrac{s}{S-1}(x - x')\big), \quad
       \omega_s = \tfrac{1}{S-1} \text{ but } \omega_0 = \omega_{S-1} = \tfrac{1}{2(S-1)}

    ``steps=50`` points batched ``batch_size`` at a time; ``baseline`` :math:`x'` is 0 (black for
    inputs in [0, 1]; pass the normalised black for normalised inputs), a number, or a tensor
    broadcastable to the canonical (B, C, H, W) batch. Completeness says
    :math:`\sum a = y^c(x) - y^c(x')`; ``exp.extra["completeness_gap"]`` (B,) is
    :math:`\sum a - (y^c(x) - y^c(x'))`. ``exp.raw`` is :math:`\sum_c a_c` (signed). Captum's
    ``riemann_trapezoid`` weights the steps by :math:`1/S` instead, so its attributions are this
    one's times :math:`(S-1)/S`.
    """

    paper = "Sundararajan et al. 2017, Axiomatic Attribution (arXiv:1703.01365)"
    several_inputs = False

    def __init__(
        self,
        model: Any,
        layer: Any = "auto",
        *,
        steps: int = 50,
        baseline: float | torch.Tensor | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, layer, **options)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise CamlensValueError(f"steps must be an int >= 2, got {steps!r}")
        if baseline is not None and not isinstance(baseline, (int, float, torch.Tensor)):
            raise CamlensTypeError(
                f"baseline must be None, a number or a tensor, got {describe(baseline)}"
            )
        self.steps = steps
        self.baseline = baseline

    def reduce(self, attribution: torch.Tensor) -> torch.Tensor:
        return attribution.sum(dim=1)

    def _step(self, x: Any, target: Target) -> Step:
        xc = self.adapter.as_tensor(x)
        batch, steps = xc.shape[0], self.steps
        base = torch.zeros_like(xc)
        if self.baseline is not None:
            base = base + torch.as_tensor(self.baseline, dtype=xc.dtype).to(xc.device)
        alphas = torch.linspace(0, 1, steps, device=xc.device)
        omega = torch.full((steps,), 1.0 / (steps - 1), device=xc.device)
        omega[0] = omega[-1] = 0.5 / (steps - 1)
        reference = self._reference(xc, target)
        resolved = reference.target
        weights = omega.repeat(batch)
        row_images = torch.arange(batch).repeat_interleave(steps)
        row_alphas = alphas.repeat(batch)
        rows = self.batch_size or auto_batch(xc, 64 * xc[0].numel() * 4, 64)
        total = torch.zeros_like(xc)
        path_scores = torch.empty(batch * steps)
        ones = (1,) * (xc.ndim - 1)  # (C, H, W) or (C, T, H, W)
        for start in range(0, batch * steps, rows):
            images = row_images[start : start + rows]
            alpha = row_alphas[start : start + rows].reshape(-1, *ones)
            points = base[images] + alpha * (xc[images] - base[images])
            part = resolved.function or resolved.indices[images]
            capture = self.adapter.input_gradients(self.adapter.native(points), part)
            weight = weights[start : start + rows].reshape(-1, *ones)
            total.index_add_(0, images.to(xc.device), capture.gradients[0] * weight)
            path_scores[start : start + rows] = capture.scores
        attribution = (xc - base) * total
        path_scores = path_scores.reshape(batch, steps)
        gap = attribution.flatten(1).sum(dim=1).cpu() - (path_scores[:, -1] - path_scores[:, 0])
        extra = {"completeness_gap": gap, "baseline_scores": path_scores[:, 0]}
        return Step(self.reduce(attribution), reference, "", extra, attribution)


@register("input-x-gradient", "inputxgradient", "input-times-gradient")
class InputXGradient(PixelMethod):
    r"""Input times gradient (Shrikumar et al. 2016, arXiv:1605.01713), Captum's
    ``InputXGradient``: the signed first-order contribution of each input value.

    .. math:: a = x \odot \frac{\partial y^c}{\partial x}, \qquad M_{ij} = \max_c |a_{c,ij}|
    """

    paper = "Shrikumar et al. 2016, Not Just a Black Box (arXiv:1605.01713)"

    def attribute(self, capture: Capture) -> torch.Tensor:
        assert capture.gradients is not None
        return capture.activations[0] * capture.gradients[0]


@register("deconvolution", "deconvnet", "deconv")
class Deconvolution(PixelMethod):
    r"""Deconvolution (Zeiler & Fergus 2014, arXiv:1311.2901), Captum's ``Deconvolution``: every
    ReLU passes back the positive part of its gradient, whatever its forward input.

    .. math:: R^{l-1} = \mathbb 1[R^l > 0]\,R^l, \qquad M_{ij} = \max_c |R^0_{c,ij}|

    ``nn.ReLU`` modules and functional ReLUs alike (as guided backpropagation); PyTorch models.
    """

    paper = "Zeiler & Fergus 2014, Visualizing and Understanding CNNs (arXiv:1311.2901)"
    guided = "deconvolution"


@register("gradient-shap", "gradientshap", "gradshap")
class GradientShap(PixelMethod):
    r"""GradientSHAP (Lundberg & Lee 2017, arXiv:1705.07874), Captum's ``GradientShap``: expected
    gradients at random points between noisy copies of the input and random baselines.

    .. math:: a = \frac1n \sum_{s=1}^{n} (\tilde x_s - b_s) \odot
       \nabla y^c\big(b_s + \alpha_s (\tilde x_s - b_s)\big), \qquad
       \tilde x_s = x + \varepsilon_s,\ \varepsilon_s \sim \mathcal N(0, \sigma^2),\
       \alpha_s \sim U(0, 1)

    ``n_samples=5`` per image, ``stdevs`` :math:`\sigma` 0 (absolute, as Captum's), ``baselines``
    0, a number or a tensor (K, C, H, W) of K baselines (one drawn uniformly per sample), ``seed``
    for the draws, made by a ``torch.Generator`` on the CPU in this order for the B·n rows (image
    by image, sample by sample): the noise (B·n, C, H, W), the baseline indices (B·n,), the
    :math:`\alpha` (B·n,). ``exp.extra`` keeps ``alphas`` and ``baseline_indices`` (B, n).
    ``batch_size`` rows per backward pass. Its sum approximates :math:`y^c(x) - E_b[y^c(b)]`.
    """

    paper = "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions"
    several_inputs = False
    smoothable = False

    def __init__(
        self,
        model: Any,
        layer: Any = "auto",
        *,
        n_samples: int = 5,
        stdevs: float = 0.0,
        baselines: float | torch.Tensor = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(model, layer, **options)
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise CamlensValueError(f"n_samples must be a positive int, got {n_samples!r}")
        if isinstance(stdevs, bool) or not isinstance(stdevs, (int, float)) or stdevs < 0:
            raise CamlensValueError(f"stdevs must be a number >= 0, got {stdevs!r}")
        self.n_samples, self.stdevs = n_samples, float(stdevs)
        self.baselines = check_baseline(baselines, "baselines")

    def draws(self, xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Noise (B·n, ...), baseline indices (B·n,) and alphas (B·n,) from ``seed``."""
        rows = xc.shape[0] * self.n_samples
        generator = torch.Generator().manual_seed(0 if self.seed is None else self.seed)
        noise = torch.randn((rows, *xc.shape[1:]), generator=generator) * self.stdevs
        count = self.baselines.shape[0] if isinstance(self.baselines, torch.Tensor) else 1
        index = torch.randint(count, (rows,), generator=generator)
        return noise, index, torch.rand(rows, generator=generator)

    def _step(self, x: Any, target: Target) -> Step:
        xc = self.adapter.as_tensor(x)
        batch, n = xc.shape[0], self.n_samples
        noise, index, alphas = self.draws(xc)
        bases = torch.as_tensor(self.baselines, dtype=xc.dtype).to(xc.device)
        bases = bases.reshape(-1, *xc.shape[1:]) if bases.ndim else bases.expand(1, *xc.shape[1:])
        reference = self._reference(xc, target)
        resolved = reference.target
        row_images = torch.arange(batch).repeat_interleave(n)
        rows = self.batch_size or auto_batch(xc, 64 * xc[0].numel() * 4, 64)
        total = torch.zeros_like(xc)
        ones = (1,) * (xc.ndim - 1)
        for start in range(0, batch * n, rows):
            part = slice(start, start + rows)
            images = row_images[part]
            noisy = xc[images] + noise[part].to(xc.device)
            base = bases[index[part].to(xc.device)]
            alpha = alphas[part].to(xc.device).reshape(-1, *ones)
            points = alpha * noisy + (1 - alpha) * base
            capture = self.adapter.input_gradients(
                self.adapter.native(points), resolved.function or resolved.indices[images]
            )
            total.index_add_(0, images.to(xc.device), (noisy - base) * capture.gradients[0])
        attribution = total / n
        extra = {"alphas": alphas.reshape(batch, n), "baseline_indices": index.reshape(batch, n)}
        return Step(self.reduce(attribution), reference, "", extra, attribution)
