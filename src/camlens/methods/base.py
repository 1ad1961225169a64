r"""The base classes every method builds on.

:class:`Explainer` owns the adapter, layer resolution, target handling and the shared ending
``maps = minmax(upsample(relu(raw)))``. :class:`LayerMethod` is the CAM family: one capture of
activations A (and gradients G = dy/dA), then ``raw = combine(A, G)`` per layer; several layers are
fused by averaging their rectified, min-max scaled maps at the finest layer's resolution (as
pytorch-grad-cam does). A method overrides one small function.

Two options wrap any method's single pass (:meth:`Explainer._step`): ``smooth=N`` averages the raw
maps (and pixel attributions) over N noisy copies :math:`x + \mathcal N(0, \sigma^2)`,
:math:`\sigma = \text{noise}\,(\max x - \min x)` (SmoothGrad, Smilkov et al. 2017,
arXiv:1706.03825), for gradient methods; ``augment=True`` averages a CAM method's raw maps over
test-time augmentations (horizontal flip x scales 0.9, 1.0, 1.1), each mapped back to the
unaugmented layer grid. The target is resolved once, on the clean input.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from camlens import targets as targets_
from camlens.backends import adapter_for
from camlens.backends.base import ONNX_METHODS, Capture, onnx_gradient_error
from camlens.backends.inputs import Inputs, as_inputs, check_batch, images_text
from camlens.backends.locks import model_lock
from camlens.errors import CamlensTypeError, CamlensValueError, CamlensWarning, check_choice
from camlens.explanation import Explanation
from camlens.maps import UPSAMPLE_MODES, finalize, minmax, upsample
from camlens.methods.precision import DTYPES, PRECISIONS, PROBES, probe, step_in
from camlens.targets import Target, several

#: Test-time augmentations of ``augment=True``: (horizontal flip, scale), the identity first.
AUGMENTATIONS = ((False, 1.0), (False, 0.9), (False, 1.1), (True, 1.0), (True, 0.9), (True, 1.1))


@dataclass
class Step:
    """One pass of a method: the raw map (B, h, w), the capture it came from, the layer name,
    extras and, for pixel-space methods, the signed attribution (B, C, H, W)."""

    raw: torch.Tensor
    capture: Capture
    layer: str
    extra: dict[str, Any] = field(default_factory=dict)
    attribution: torch.Tensor | None = None


def auto_batch(x: torch.Tensor, per_item: int, cap: int) -> int:
    """Rows per batch so that ``per_item`` bytes each fit in a quarter of the free memory of
    ``x``'s device (at least 1, at most ``cap``)."""
    try:
        if x.device.type == "cuda":
            free = torch.cuda.mem_get_info(x.device)[0]
        else:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError, RuntimeError):
        free = 2**31
    return max(1, min(cap, int(free // 4 // max(per_item, 1))))


class Explainer:
    """A reusable explainer: ``Method(model, layer="auto", **options)(x, target=None)``.

    Options shared by every method: ``relu`` (rectify before upsampling, default True),
    ``upsample`` ("bilinear", "bicubic" or "nearest") and ``normalize`` (min-max to [0, 1]).
    Gradient methods take ``smooth=N`` (average over N noisy copies, ``noise`` the standard
    deviation as a fraction of each image's value range, ``seed`` for the noise: 0 by default, so
    the same call gives the same map; None draws from torch's global generator, ``batch_size``
    copies per pass); CAM methods take ``augment=True`` (test-time augmentation). ``image``
    names the explained input when ``x`` is a tuple or dict of inputs
    (:mod:`camlens.backends.inputs`).

    ``precision`` ("fp32" by default): "bf16" runs the method's forward and backward passes of a
    float32 PyTorch model under bfloat16 autocast (methods with ``autocasts``; the maps are still
    computed and returned in float32), "auto" picks bf16 where the device runs it fast
    (``adapter.bf16_ok()``: CUDA with bf16, a CPU whose bf16 matrix products measure 1.5x
    float32's rate) for the methods that may run in bf16 (``bf16_auto``), after a probe once per
    model, method, device and input shape: one pass in each precision, bf16 kept if it was faster
    and its maps agree with float32's (correlation >= 0.99, max difference <= 0.05:
    :data:`~camlens.methods.precision.AGREEMENT`); "fp32" otherwise.
    A method without ``autocasts``, a Keras model and a half-precision model run as they are.
    The precision used is recorded in ``exp.extra["precision"]`` ("fp32", "bf16", "fp16"; a
    many-forward method's own, "int8" included).
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    uses_layer: ClassVar[bool] = True
    smoothable: ClassVar[bool] = False
    #: whether the method runs on several inputs (it needs no forwards on altered copies)
    several_inputs: ClassVar[bool] = True
    #: whether ``precision="bf16"`` runs the method's passes under bfloat16 autocast
    autocasts: ClassVar[bool] = False
    #: whether ``precision="auto"`` may pick bf16 (the maps meet the agreement with float32)
    bf16_auto: ClassVar[bool] = False
    #: whether ``precision="int8"`` runs the method's many forwards on an int8 copy
    int8_forwards: ClassVar[bool] = False

    @classmethod
    def applies_to(cls, model: Any) -> bool:
        """Whether the method can explain ``model`` (a model or its adapter): every model, but
        the attention methods need a vision transformer, and an ONNX model (no gradients) takes
        only the methods of :data:`camlens.backends.onnx.GRADIENT_FREE`."""
        if getattr(model, "framework", None) == "onnx":
            return cls.name in ONNX_METHODS
        return True

    def __init__(
        self,
        model: Any,
        layer: Any = "auto",
        *,
        relu: bool = True,
        upsample: str = "bilinear",
        normalize: bool = True,
        smooth: int = 0,
        noise: float = 0.15,
        augment: bool = False,
        seed: int | None = 0,
        batch_size: int | None = None,
        image: int | str | None = None,
        precision: str = "fp32",
    ) -> None:
        self.adapter = adapter_for(model)
        if not self.applies_to(self.adapter) and self.adapter.framework == "onnx":
            raise onnx_gradient_error(f"method {self.name!r}")
        self.model = model
        self.layer = layer
        self.relu = relu
        if upsample not in UPSAMPLE_MODES:
            raise CamlensValueError(
                f"upsample must be one of {', '.join(UPSAMPLE_MODES)}, got {upsample!r}"
            )
        self.upsample = upsample
        self.normalize = normalize
        for flag, value in (("relu", relu), ("normalize", normalize)):
            if not isinstance(value, bool):
                raise CamlensTypeError(f"{flag} must be True or False, got {value!r}")
        for flag, number in (("smooth", smooth), ("batch_size", batch_size)):
            if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
                raise CamlensTypeError(f"{flag} must be an int, got {number!r}")
        if smooth < 0 or (batch_size is not None and batch_size < 1):
            raise CamlensValueError(
                f"smooth must be >= 0 and batch_size >= 1, got smooth={smooth}, "
                f"batch_size={batch_size}"
            )
        if smooth and not self.smoothable:
            raise CamlensValueError(
                f"smooth={smooth} averages gradients over noisy copies, but method "
                f"{self.name!r} uses no gradients; drop smooth or pick a gradient method"
            )
        if augment and not (self.uses_layer and isinstance(augment, bool)):
            raise CamlensValueError(
                f"augment=True is for CAM methods (maps at a layer), got augment={augment!r} for "
                f"method {self.name!r}; use smooth=N for pixel-space methods"
            )
        if smooth and augment:
            raise CamlensValueError("pass smooth=N or augment=True, not both")
        if not isinstance(noise, (int, float)) or noise < 0:
            raise CamlensValueError(f"noise must be a number >= 0, got {noise!r}")
        self.smooth = smooth
        self.noise = float(noise)
        self.augment = augment
        self.seed = seed
        self.batch_size = batch_size
        self.image = image
        check_choice(precision, PRECISIONS, "precision")
        self.precision = precision
        self._used: str | None = None  # the precision of the call running (set by _pass)

    def __call__(
        self, x: Any, target: Target = None, *, activation: str | None = None
    ) -> Explanation:
        """Explain ``x``: one map per image, or per (image, class) pair for several targets.

        ``target``: see :mod:`camlens.targets`; also one list of classes per image, ``"topK"``,
        ``"above:P"`` (an image with no class reaching P gets no map) and ``"output:K"`` /
        ``("output", K)`` (:mod:`camlens.targets.several`), run as one batch whose rows repeat
        the images; ``exp.index`` says which image each map belongs to. ``activation``
        ("softmax", "sigmoid" or "none") is how ``probs`` and ``above:P`` read the logits.
        """
        x = as_inputs(x, self.image)
        if isinstance(x, Inputs):
            self._check_several(x)
        check_batch(x, self.adapter.as_tensor(x), getattr(self.adapter, "dtype", None))
        with model_lock(self.adapter.model):  # hooks and train/eval flags: one call at a time
            self._used = None
            if several.planned(target, activation):
                return self._planned(x, target, activation)
            return self._call(x, target)

    def _planned(self, x: Any, target: Any, activation: str | None) -> Explanation:
        """Plan the rows (:func:`camlens.targets.several.plan`) and explain them in one call."""
        xc = self.adapter.as_tensor(x)
        owners, resolved = several.plan(target, self.adapter.logits(xc), activation)
        if torch.equal(owners, torch.arange(xc.shape[0])):
            return self._call(x, resolved)
        if isinstance(x, Inputs):
            raise CamlensValueError(
                f"target {target!r} repeats images, which camlens does not do for several inputs; "
                "pass one class per image"
            )
        if not len(owners):
            return self._empty(x)
        exp = self._call(self.adapter.native(xc[owners.to(xc.device)]), resolved)
        exp.index = owners
        return exp

    def _empty(self, x: Any) -> Explanation:
        """No map: no (image, class) pair was chosen (no class reached ``above:P``)."""
        height, width = self.adapter.input_size(x)
        empty = torch.empty(0)
        return Explanation(
            maps=torch.empty(0, height, width),
            raw=torch.empty(0, 0, 0),
            targets=empty.long(),
            scores=empty,
            probs=empty,
            layer="",
            method=self.name,
            index=empty.long(),
            inputs=self.adapter.as_tensor(x).detach().cpu(),
        )

    def _call(self, x: Any, target: Target) -> Explanation:
        if self.smooth:
            return self._smoothed(x, target, self.smooth)
        if self.augment:
            return self._augmented(x, target)
        step = self._pass(x, target)
        extra = dict(step.extra)
        if step.attribution is not None:
            extra["attribution"] = step.attribution.detach().float().cpu()
        return self._finish(step.raw, x, step.capture, step.layer, **extra)

    def _check_several(self, x: Inputs) -> None:
        """Refuse what cannot run on several inputs: other frameworks, altered copies."""
        if self.adapter.framework != "torch":
            raise CamlensTypeError(
                f"several inputs are for PyTorch models, got a {self.adapter.framework} model"
            )
        if not self.several_inputs or self.smooth or self.augment:
            what = "smooth=N" if self.smooth else "augment=True" if self.augment else self.name
            raise CamlensValueError(
                f"{what} runs the model on altered copies of the image, which camlens does not do "
                f"for several inputs (x has {len(x.values)}); use a gradient method such as "
                "'gradcam', 'eigencam' or 'saliency'"
            )

    def _step(self, x: Any, target: Target) -> Step:
        """One pass of the method on the native batch ``x``."""
        raise NotImplementedError

    def precision_used(self) -> str:
        """The precision of this method's passes on the model: ``precision`` resolved."""
        dtype = getattr(self.adapter, "dtype", torch.float32)
        if dtype in DTYPES:
            return DTYPES[dtype]
        if not self.autocasts or self.adapter.framework != "torch":
            return "fp32"
        if self.precision == "auto":
            return "bf16" if self.bf16_auto and self.adapter.bf16_ok() else "fp32"
        return "bf16" if self.precision == "bf16" else "fp32"

    def _pass(self, x: Any, target: Target) -> Step:
        """:meth:`_step` in the precision used (``auto``'s probe run first where it may pick
        bf16); the choice is kept for :meth:`_finish` to record."""
        used = self.precision_used()
        if (
            not self.autocasts
            or used != "bf16"
            or getattr(self.adapter, "dtype", None) != torch.float32
        ):
            self._used = used
            return self._step(x, target)
        if self.precision == "auto":
            probes = PROBES.setdefault(self.adapter.model, {})
            key = (self.name, str(self.adapter.device), tuple(self.adapter.as_tensor(x).shape))
            if key not in probes:
                probes[key], step = probe(self, x, target)
                self._used = probes[key]
                return step
            used = probes[key]
        self._used = used
        return step_in(self, x, target, used)

    def _reference(self, xc: torch.Tensor, target: Target) -> Capture:
        """Target, scores and probabilities of the clean canonical batch (no gradients)."""
        if isinstance(target, targets_.OutputTarget):  # the whole output: PyTorch models only
            logits = self.adapter.outputs(xc)
        else:
            logits = self.adapter.logits(xc)
        resolved = targets_.resolve(target, logits)
        return Capture(
            activations=[],
            gradients=None,
            logits=logits,
            target=resolved,
            scores=targets_.scores(logits, resolved).detach().float().cpu(),
            probs=targets_.probabilities(logits, resolved),
        )

    def _copies_target(self, capture: Capture, copies: int) -> torch.Tensor | Callable[..., Any]:
        """The resolved target for a batch holding ``copies`` consecutive copies of each image."""
        owners = torch.arange(len(capture.target.indices)).repeat_interleave(copies)
        rows = capture.target.rows(owners)
        return rows.indices if rows.function is None else rows.function

    def _smoothed(self, x: Any, target: Target, samples: int) -> Explanation:
        """Average raw map and attribution over ``samples`` noisy copies of every image."""
        xc = self.adapter.as_tensor(x)
        ref = self._reference(xc, target)
        batch = xc.shape[0]
        dims = tuple(range(1, xc.ndim))
        span = xc.amax(dim=dims) - xc.amin(dim=dims)
        sigma = (self.noise * span).repeat_interleave(samples)
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=xc.device).manual_seed(self.seed)
        std = sigma.reshape(-1, *(1,) * (xc.ndim - 1)).expand(batch * samples, *xc.shape[1:])
        noisy = xc.repeat_interleave(samples, dim=0) + torch.normal(0.0, std, generator=generator)
        tgt = self._copies_target(ref, samples)
        rows = self.batch_size or auto_batch(xc, 64 * xc[0].numel() * 4, 64)
        raws: list[torch.Tensor] = []
        attributions: list[torch.Tensor] = []
        layer = ""
        for start in range(0, noisy.shape[0], rows):
            part = tgt if callable(tgt) else tgt[start : start + rows]
            step = self._pass(self.adapter.native(noisy[start : start + rows]), part)
            raws.append(step.raw.float())
            if step.attribution is not None:
                attributions.append(step.attribution.float())
            layer = step.layer
        raw = torch.cat(raws).reshape(batch, samples, *raws[0].shape[1:]).mean(dim=1)
        extra: dict[str, Any] = {"samples": samples}
        if attributions:
            joined = torch.cat(attributions)
            extra["attribution"] = joined.reshape(batch, samples, *joined.shape[1:]).mean(dim=1)
            extra["attribution"] = extra["attribution"].cpu()
        return self._finish(raw, x, ref, layer, **extra)

    def _augmented(self, x: Any, target: Target) -> Explanation:
        """Average raw map over flips and rescalings, each mapped back to the layer's grid.

        A model that accepts only its own input size (a ViT) gets flips only, with a warning.
        """
        xc = self.adapter.as_tensor(x)
        if xc.ndim == 5:
            raise CamlensValueError(
                f"augment=True flips and rescales images, got a clip or volume of shape "
                f"{tuple(xc.shape)}; drop augment"
            )
        ref = self._reference(xc, target)
        tgt = self._copies_target(ref, 1)
        height, width = xc.shape[-2:]
        raws: list[torch.Tensor] = []
        used: list[tuple[bool, float]] = []
        layer = ""
        scales_ok = True
        for flip, scale in AUGMENTATIONS:
            if scale != 1.0 and not scales_ok:
                continue
            xt = xc.flip(-1) if flip else xc
            if scale != 1.0:
                size = (round(height * scale), round(width * scale))
                xt = F.interpolate(xt, size=size, mode="bilinear", align_corners=False)
            try:
                step = self._pass(self.adapter.native(xt), tgt)
            except (RuntimeError, AssertionError, ValueError) as error:
                if scale == 1.0 or any(s != 1.0 for _, s in used):
                    raise
                warnings.warn(
                    f"augment=True: the model rejects {tuple(xt.shape[-2:])} inputs "
                    f"({type(error).__name__}); averaging over flips only",
                    CamlensWarning,
                    stacklevel=3,
                )
                scales_ok = False
                continue
            raw = step.raw.float()
            if raws:
                raw = upsample(raw, (raws[0].shape[1], raws[0].shape[2]), "bilinear")
            raws.append(raw.flip(-1) if flip else raw)
            used.append((flip, scale))
            layer = step.layer
        extra = {"augmentations": [f"{'flip ' if f else ''}x{s}" for f, s in used]}
        return self._finish(torch.stack(raws).mean(dim=0), x, ref, layer, **extra)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer={self.layer!r})"

    def _finish(
        self, raw: torch.Tensor, x: Any, capture: Capture, layer: str, **extra: Any
    ) -> Explanation:
        """Build the Explanation from a raw (B, h, w) map."""
        size = self.adapter.input_size(x)
        maps = finalize(raw, size, relu=self.relu, mode=self.upsample, normalize=self.normalize)
        raw = raw.detach().float().cpu()
        failed = nonfinite_rows(capture.logits, raw.shape[0])
        if failed:
            maps[failed] = raw[failed] = float("nan")
            one = len(failed) == 1
            warnings.warn(
                f"the model's output holds NaN or inf for {images_text(failed)}; "
                f"{'its map is' if one else 'their maps are'} NaN (method {self.name!r} cannot "
                "explain a score that is not a number): check the model's weights and what it "
                "computes from these images",
                CamlensWarning,
                stacklevel=4,
            )
        return Explanation(
            maps=maps,
            raw=raw,
            targets=capture.target.indices.clone(),
            scores=capture.scores,
            probs=capture.probs,
            layer=layer,
            method=self.name,
            extra={"precision": self._used or self.precision_used(), **extra},
            inputs=self.adapter.as_tensor(x).detach().cpu(),
        )


class LayerMethod(Explainer):
    """The CAM family: ``raw = combine(A, G)`` at one or more layers."""

    needs_gradients: ClassVar[bool] = True
    needs_head: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "smoothable" not in cls.__dict__:
            cls.smoothable = cls.needs_gradients

    def combine(
        self, activations: torch.Tensor, gradients: torch.Tensor | None, capture: Capture
    ) -> torch.Tensor:
        """(B, C, h, w) activations and gradients -> raw map (B, h, w)."""
        raise NotImplementedError

    def layer_raw(
        self,
        x: Any,
        name: str,
        activations: torch.Tensor,
        gradients: torch.Tensor | None,
        capture: Capture,
    ) -> torch.Tensor:
        """The raw map (B, h, w) at layer ``name``; perturbation methods also use ``x``."""
        return self.combine(activations, gradients, capture)

    def _capture(self, x: Any, names: list[str], target: Target) -> Capture:
        """The forward (and backward) pass at the layers ``names``."""
        return self.adapter.capture(
            x, names, target, gradients=self.needs_gradients, head=self.needs_head
        )

    def _step(self, x: Any, target: Target) -> Step:
        names = self.adapter.resolve_layers(self.layer, x)
        capture = self._capture(x, names, target)
        grads: list[torch.Tensor | None] = [None] * len(names)
        if capture.gradients:
            grads = list(capture.gradients)
        raws = [
            self.layer_raw(x, name, a, g, capture)
            for name, a, g in zip(names, capture.activations, grads)
        ]
        raw = raws[0] if len(raws) == 1 else fuse(raws, relu=self.relu)
        extra = {"layers": dict(zip(names, raws))} if len(raws) > 1 else {}
        return Step(raw, capture, "+".join(names), extra)


def nonfinite_rows(logits: Any, batch: int) -> list[int]:
    """The images whose logits (B, K) hold NaN or inf (none for a whole output that is not a
    tensor: a detector's list of dicts)."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
        return []
    return (~torch.isfinite(logits)).any(dim=1).nonzero()[:, 0].tolist()


def fuse(raws: list[torch.Tensor], relu: bool = True) -> torch.Tensor:
    """Average of per-layer maps, each rectified and min-max scaled at the finest resolution."""
    finest = max((tuple(r.shape[1:]) for r in raws), key=lambda s: torch.Size(s).numel())
    scaled = [minmax(upsample(r.clamp_min(0) if relu else r, finest)) for r in raws]
    return torch.stack(scaled).mean(dim=0)
