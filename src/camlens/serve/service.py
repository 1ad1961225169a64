"""The served model: one model, its description, and explanations micro-batched for many clients.

An image is fed as ``camlens explain`` feeds it: the whole image resized to the model's input side
(``runner.to_batch``), then the model's own preprocessing. Every request is checked (method, layer,
target) before it joins the queue, so a bad one fails alone and at once; requests with the same
method and layer share one batch: one forward for the top-5 and one explainer call.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from camlens.errors import CamlensValueError
from camlens.locks import model_lock
from camlens.serve.batcher import MicroBatcher

TOP = 5


@dataclass
class Request:
    """One image to explain: uint8 RGB, and a checked method, layer and target (None: predicted)."""

    image: np.ndarray
    method: str
    layer: str
    target: int | None


def map_png(values: torch.Tensor | np.ndarray) -> bytes:
    """A map (H, W) in [0, 1] as an 8-bit grayscale PNG: ``round(255 * value)``."""
    from PIL import Image

    array = np.asarray(torch.as_tensor(values).float().clamp(0, 1).numpy())
    buffer = io.BytesIO()
    Image.fromarray(np.round(array * 255.0).astype(np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (B, K): softmax, or for a one-logit head (1 - sigmoid, sigmoid)."""
    logits = logits.detach().float().cpu()
    if logits.shape[1] == 1:
        positive = torch.sigmoid(logits[:, 0])
        return torch.stack([1.0 - positive, positive], dim=1)
    return torch.softmax(logits, dim=1)


class ModelService:
    """The model behind ``camlens serve``: built from a spec given on the command line only."""

    def __init__(
        self,
        spec: str = "demo",
        weights: str | None = None,
        *,
        device: str = "auto",
        preprocess: str = "auto",
        size: int | None = None,
        labels: list[str] | None = None,
        trust_pickle: bool = False,
        max_batch: int = 8,
        window: float = 0.005,
        max_pending: int = 256,
    ) -> None:
        import camlens
        from camlens.backends import adapter_for
        from camlens.models import class_names, kind_of, load_spec
        from camlens.preprocessing import input_size, resolve

        if weights is None and kind_of(spec) in ("torchvision", "timm"):
            weights = "DEFAULT"
        network = load_spec(spec, weights, trust_pickle=trust_pickle)
        self.prepare = resolve(preprocess, spec, network)
        self.size = size or input_size(network)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if isinstance(network, torch.nn.Module):
            network = network.to(device)
        self.spec = spec
        self.device = device
        self.model = network
        self.adapter = adapter_for(network)
        blank = self.to_input([np.zeros((self.size, self.size, 3), np.uint8)])
        with model_lock(self.model):
            self.classes = int(self.adapter.logits(blank).shape[1])
        self.names = labels or class_names(spec, network, self.classes)
        self.layers, self.auto = camlens.layers(self.adapter, blank)
        self._explainers: dict[tuple[str, str], Any] = {}
        self.batcher = MicroBatcher(
            self._run, max_batch=max_batch, window=window, max_pending=max_pending
        )

    # ------------------------------------------------------------------ inputs and checks
    def to_input(self, images: list[np.ndarray]) -> Any:
        """uint8 RGB images -> the model's input batch, as ``camlens explain`` makes it."""
        from camlens.runner import to_batch

        x = self.prepare(to_batch(images, self.size, normalize=False))
        if getattr(self.adapter, "framework", "torch") == "keras":
            return x.permute(0, 2, 3, 1).contiguous()
        return x.to(self.device) if isinstance(self.model, torch.nn.Module) else x

    @property
    def valid_classes(self) -> int:
        """Explainable classes: a one-logit head has two (0: the negative logit)."""
        return 2 if self.classes == 1 else self.classes

    def name(self, index: int) -> str:
        if self.names and 0 <= index < len(self.names):
            return self.names[index]
        return str(index)

    def request(self, image: np.ndarray, method: str, target: str | None, layer: str) -> Request:
        """A checked request; ``CamlensValueError`` names the field that is wrong."""
        from camlens.registry import get

        try:
            chosen = get(method).name
        except CamlensValueError as error:
            raise CamlensValueError(f"method: {error}") from None
        layer = layer or "auto"
        known = [info.name for info in self.layers]
        if layer != "auto" and layer not in known:
            raise CamlensValueError(
                f"layer: expected 'auto' or one of the model's explainable layers "
                f"({', '.join(known)}), got {layer!r}"
            )
        index: int | None = None
        if target not in (None, "", "pred"):
            try:
                index = int(str(target))
            except ValueError:
                index = -1
            if not 0 <= index < self.valid_classes or str(index) != str(target).strip():
                raise CamlensValueError(
                    f"target: expected 'pred' or a class index 0..{self.valid_classes - 1}, "
                    f"got {target!r}"
                )
        return Request(image, chosen, (self.auto or "auto") if layer == "auto" else layer, index)

    # ------------------------------------------------------------------ explaining
    def submit(self, request: Request):
        """A future of the request's answer (see :meth:`_answer`)."""
        return self.batcher.submit((request.method, request.layer), request)

    def explainer(self, method: str, layer: str) -> Any:
        """The explainer of ``method`` at ``layer``, built once and reused."""
        from camlens.registry import get, options_for

        key = (method, layer)
        if key not in self._explainers:
            self._explainers[key] = get(method)(
                self.adapter, layer=layer, **options_for(method, precision="auto")
            )
        return self._explainers[key]

    def _run(self, key: Hashable, requests: list[Request]) -> list[dict[str, Any]]:
        method, layer = cast(tuple[str, str], key)
        x = self.to_input([request.image for request in requests])
        with model_lock(self.model):
            probs = probabilities(self.adapter.logits(x))
        predicted = probs.argmax(dim=1)
        targets = [
            int(predicted[i]) if r.target is None else r.target for i, r in enumerate(requests)
        ]
        exp = self.explainer(method, layer)(x, target=targets)
        return [self._answer(exp, i, probs[i], requests[i]) for i in range(len(requests))]

    def _answer(self, exp: Any, i: int, probs: torch.Tensor, request: Request) -> dict[str, Any]:
        top = probs.topk(min(TOP, probs.numel()))
        target = int(exp.targets[i])
        height, width = exp.maps.shape[1:]
        return {
            "predicted": int(top.indices[0]),
            "top": [
                {"class": int(c), "name": self.name(int(c)), "probability": float(p)}
                for p, c in zip(top.values, top.indices)
            ],
            "target": target,
            "target_name": self.name(target),
            "probability": float(exp.probs[i]),
            "score": float(exp.scores[i]),
            "layer": exp.layer,
            "method": exp.method,
            "width": int(width),
            "height": int(height),
            "map": base64.b64encode(map_png(exp.maps[i])).decode("ascii"),
        }

    def close(self) -> None:
        self.batcher.close()
