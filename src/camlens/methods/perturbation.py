"""Perturbation CAMs: channel weights measured by changing the input or the layer and re-scoring.

Both methods run many forwards, batched on the model's device. With ``progress=True`` a progress
bar appears on stderr once a call has taken more than two seconds; by default a call draws
nothing (the command line asks for the bar).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from camlens import targets as targets_
from camlens.backends.base import Capture
from camlens.backends.quantize import calibration_rows
from camlens.errors import CamlensTypeError, CamlensValueError, check_choice
from camlens.maps import minmax
from camlens.methods._registry import register
from camlens.methods.base import LayerMethod, auto_batch

PRECISIONS = ("auto", "fp32", "bf16", "int8")


def check_progress(progress: Any) -> None:
    """Refuse a ``progress`` that is not a bool."""
    if not isinstance(progress, bool):
        raise CamlensTypeError(f"progress must be True or False, got {progress!r}")


class _Progress:
    """A transient rich progress bar that only appears after ``delay`` seconds."""

    def __init__(self, total: int, label: str, enabled: bool = True, delay: float = 2.0) -> None:
        self.total, self.label, self.enabled, self.delay = total, label, enabled, delay
        self.start = time.perf_counter()
        self.done = 0
        self.bar: Any = None
        self.task: Any = None

    def advance(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
        elif (
            self.enabled
            and self.done < self.total
            and time.perf_counter() - self.start > self.delay
        ):
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(transient=True, console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total, completed=self.done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def check_precision(precision: Any) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a clear error."""
    check_choice(precision, PRECISIONS, "precision")
    return precision


def resolved_precision(adapter: Any, precision: str, method: str) -> str:
    """The precision of a method's many forwards: "auto" resolved; a half-precision model runs in
    its own dtype ("fp32": no autocast, no quantisation), and refuses "bf16" and "int8" (which
    cast or quantise a float32 model) unless already bfloat16."""
    dtype = getattr(adapter, "dtype", torch.float32)
    if dtype in (torch.float16, torch.bfloat16):
        if precision in ("auto", "fp32") or (precision == "bf16" and dtype == torch.bfloat16):
            return "fp32"
        raise CamlensValueError(
            f"method {method!r} with precision={precision!r} runs a float32 model in "
            f"reduced precision, but this model's weights are already "
            f"{str(dtype).replace('torch.', '')}; use precision='auto', or model.float() first"
        )
    if precision == "auto":
        return "bf16" if adapter.bf16_ok() else "fp32"
    return precision


class _PerturbationCAM(LayerMethod):
    several_inputs = False
    needs_gradients = False

    def __init__(
        self,
        model: Any,
        layer: Any = "auto",
        *,
        batch_size: int | None = None,
        progress: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(model, layer, batch_size=batch_size, **options)
        check_progress(progress)
        self.progress = progress

    label = "Perturbation"  # the progress bar's

    def scores_above(
        self,
        x: Any,
        name: str,
        activations: torch.Tensor,
        capture: Capture,
        count: int,
        copies: Any,
    ) -> torch.Tensor:
        """Target scores (B, count): for each image, the network above layer ``name`` run on
        ``copies(image, start, stop)`` (copies start..stop of its changed activations),
        ``batch_size`` copies per forward."""
        batch = activations.shape[0]
        rows = self.batch_size or auto_batch(activations, 16 * activations[0].numel() * 4, count)
        scores = torch.empty(batch, count, device=activations.device)
        progress = _Progress(batch * count, self.label, self.progress)
        try:
            for image in range(batch):
                images = torch.full((1,), image, device=activations.device)
                for start in range(0, count, rows):
                    stop = min(start + rows, count)
                    logits = self.adapter.logits_above(x, name, copies(image, start, stop), image)
                    row_target = capture.target.rows(images.expand(stop - start))
                    scores[image, start:stop] = targets_.scores(logits, row_target).float()
                    progress.advance(stop - start)
        finally:
            progress.close()
        return scores


class MaskedForwards:
    """Batched forwards of whole perturbed inputs, in a chosen precision (Score-CAM, RISE)."""

    adapter: Any
    name: str
    precision: str
    autocasts: ClassVar[bool] = False  # the passes run as they are; the masked forwards' own
    int8_forwards: ClassVar[bool] = True
    batch_size: int | None
    progress: bool
    label: str

    def resolved_precision(self) -> str:
        """The precision of the masked forwards (:func:`resolved_precision`)."""
        return resolved_precision(self.adapter, self.precision, self.name)

    def precision_used(self) -> str:
        """The precision recorded in ``exp.extra["precision"]``: the masked forwards'."""
        return self.resolved_precision()

    def scored(
        self,
        xc: torch.Tensor,
        images: torch.Tensor,
        masked: Any,
        target: targets_.ResolvedTarget,
    ) -> torch.Tensor:
        """Target scores (N,) of the N inputs ``masked(rows)`` builds (row r perturbs image
        ``images[r]``), ``batch_size`` rows per forward, in the resolved precision."""
        total = images.shape[0]
        precision = self.resolved_precision()
        cap = 128 if xc.device.type == "cuda" else 32
        rows = self.batch_size or auto_batch(xc, 64 * xc[0].numel() * 4, cap)
        scores = torch.empty(total, device=xc.device)
        progress = _Progress(total, self.label, self.progress)
        quantized = (
            self.adapter.int8(masked(calibration_rows(total).to(xc.device)))
            if precision == "int8"
            else nullcontext()
        )
        try:
            with quantized:
                for start in range(0, total, rows):
                    stop = min(start + rows, total)
                    part = torch.arange(start, stop, device=xc.device)
                    logits = self.adapter.infer(masked(part), precision=precision)
                    row_target = target.rows(images[start:stop])
                    scores[start:stop] = targets_.scores(logits, row_target).float()
                    progress.advance(stop - start)
        finally:
            progress.close()
        return scores


@register("scorecam", "score-cam")
class ScoreCAM(MaskedForwards, _PerturbationCAM):
    r"""Score-CAM (Wang et al. 2020, arXiv:1910.01279), as pytorch-grad-cam computes it.

    Each channel :math:`A^k`, upsampled to the input (bilinear, ``align_corners=True``) and
    min-max scaled to :math:`M^k \in [0, 1]`, masks the input; the target's logits on the masked
    inputs, softmaxed over channels, weight the channels:

    .. math:: w_k = \operatorname{softmax}_k\big(y^c(x \odot M^k)\big), \qquad
       L = \sum_k w_k A^k

    A constant channel gives an all-zero mask (no epsilon). ``top_k_channels=N`` (Faster
    Score-CAM) keeps the N channels of largest mean activation per image, the softmax running over
    those. The masked forwards run in inference mode, channels-last, ``batch_size`` at a time.
    ``precision``: "fp32" (exact), "bf16" (bfloat16 autocast for the masked forwards, maps within
    ~1e-3), "int8" (an int8 copy of a PyTorch model on the CPU, calibrated on 32 of the masked
    inputs and checked against float32 on them: about 3x faster than fp32 on CPUs with VNNI, maps
    within ~3e-3 on ResNet-18 at 224 px, ~1.5e-2 on tiny inputs) or "auto" (bf16 where the device
    runs it fast: CUDA, CPUs whose bf16 matrix products measure 1.5x float32's rate; fp32
    elsewhere). A float16 or bfloat16 model runs in its own dtype with "auto" (and "fp32");
    "bf16" and "int8" are refused for it, "bf16" accepted for a bfloat16 model.
    """

    paper = "Wang et al. 2020, Score-CAM (arXiv:1910.01279)"
    label = "Score-CAM"

    def __init__(
        self,
        model: Any,
        layer: Any = "auto",
        *,
        top_k_channels: int | None = None,
        precision: str = "auto",
        **options: Any,
    ) -> None:
        super().__init__(model, layer, **options)
        if top_k_channels is not None and (
            isinstance(top_k_channels, bool)
            or not isinstance(top_k_channels, int)
            or top_k_channels < 1
        ):
            raise CamlensValueError(
                f"top_k_channels must be a positive int or None, got {top_k_channels!r}"
            )
        self.top_k_channels = top_k_channels
        self.precision = check_precision(precision)

    def channels(self, activations: torch.Tensor) -> torch.Tensor:
        """Indices (B, K) of the channels used: all, or the ``top_k_channels`` largest means."""
        batch, count = activations.shape[:2]
        if self.top_k_channels is None or self.top_k_channels >= count:
            return torch.arange(count, device=activations.device).expand(batch, count)
        space = tuple(range(2, activations.ndim))
        return activations.mean(dim=space).topk(self.top_k_channels, dim=1).indices

    def layer_raw(
        self,
        x: Any,
        name: str,
        activations: torch.Tensor,
        gradients: torch.Tensor | None,
        capture: Capture,
    ) -> torch.Tensor:
        xc = self.adapter.as_tensor(x)
        index = self.channels(activations)
        batch, count = index.shape
        grid = activations.shape[2:]  # (h, w), or (t, h, w) for clips and volumes
        ones = (1,) * len(grid)
        chosen = activations.gather(1, index.reshape(batch, count, *ones).expand(-1, -1, *grid))
        weights = torch.softmax(self.masked_scores(xc, chosen, capture.target), dim=1)
        return (weights.reshape(batch, count, *ones) * chosen).sum(dim=1)

    def masked_scores(
        self, xc: torch.Tensor, chosen: torch.Tensor, target: targets_.ResolvedTarget
    ) -> torch.Tensor:
        """Target scores (B, K) of the input masked by each upsampled, min-max scaled channel."""
        batch, count = chosen.shape[:2]
        flat = chosen.reshape(batch * count, 1, *chosen.shape[2:])
        images = torch.arange(batch, device=xc.device).repeat_interleave(count)

        def masked(rows: torch.Tensor) -> torch.Tensor:
            mode = "trilinear" if flat.ndim == 5 else "bilinear"
            masks = F.interpolate(flat[rows], size=xc.shape[2:], mode=mode, align_corners=True)
            return xc[images[rows]] * minmax(masks[:, 0])[:, None]

        return self.scored(xc, images, masked, target).reshape(batch, count)


@register("ablationcam", "ablation-cam")
class AblationCAM(_PerturbationCAM):
    r"""Ablation-CAM (Desai & Ramaswamy 2020, WACV): the relative drop of the target's score when
    one channel of the layer is set to zero.

    .. math:: w_k = \frac{y^c - y^c_k}{y^c}, \qquad L = \sum_k w_k A^k

    :math:`y^c_k` is the score with channel k of the layer's output zeroed; only the network
    above the layer runs for the ablated copies (batched, ``batch_size`` copies per forward). A
    zero score :math:`y^c` gives zero weights. pytorch-grad-cam ablates with
    :math:`\min A - 10^7` instead of 0 when the layer's output is nowhere 0; camlens always uses 0,
    as the paper does.
    """

    paper = "Desai & Ramaswamy 2020, Ablation-CAM (WACV 2020)"
    label = "Ablation-CAM"

    def layer_raw(
        self,
        x: Any,
        name: str,
        activations: torch.Tensor,
        gradients: torch.Tensor | None,
        capture: Capture,
    ) -> torch.Tensor:
        count = activations.shape[1]
        score = targets_.scores(capture.logits, capture.target).float().to(activations.device)

        def ablated_copies(image: int, start: int, stop: int) -> torch.Tensor:
            copies = activations[image].expand(stop - start, *activations.shape[1:]).clone()
            copies[torch.arange(stop - start), torch.arange(start, stop)] = 0
            return copies

        ablated = self.scores_above(x, name, activations, capture, count, ablated_copies)
        nonzero = score != 0
        safe = torch.where(nonzero, score, torch.ones_like(score))[:, None]
        weights = torch.where(nonzero[:, None], (score[:, None] - ablated) / safe, 0.0)
        weights = weights.reshape(*weights.shape, *(1,) * (activations.ndim - 2))
        return (weights * activations).sum(dim=1)
