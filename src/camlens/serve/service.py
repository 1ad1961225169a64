"""The served model: one model, its description, and explanations micro-batched for many clients.

An image is fed as ``camlens explain`` feeds it (``Session.to_input``): the whole image resized to
the model's input side, then the model's own preprocessing. Every request is checked (method, layer,
target) before it joins the queue, so a bad one fails alone and at once; requests with the same
method and layer share one batch: one forward for the top-5 and one explainer call.
"""

from __future__ import annotations

import base64
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from camlens.backends.locks import model_lock
from camlens.errors import CamlensValueError, check_choice
from camlens.methods._registry import get
from camlens.methods._registry import methods as camlens_methods
from camlens.methods.precision import PRECISIONS
from camlens.runs.records import map_png
from camlens.runs.session import LABEL, Session, resize_unit
from camlens.serve.batcher import MicroBatcher
from camlens.serve.guards import shown
from camlens.targets.several import output_value

TOP = 5
#: The most prompts an image-text model's class list takes from a client, and their length.
MAX_PROMPTS, MAX_PROMPT = 1000, 300


@dataclass
class Request:
    """One image to explain: its [0, 1] (3, S, S) input before the model's preprocessing
    (:func:`camlens.runs.session.resize_unit`), a checked method, layer and target (None:
    predicted)."""

    unit: torch.Tensor
    method: str
    layer: str
    target: int | str | None  # a class, "output:K" (an output value), None (the predicted class)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (B, K): softmax, or for a one-logit head (1 - sigmoid, sigmoid)."""
    logits = logits.detach().float().cpu()
    if logits.shape[1] == 1:
        positive = torch.sigmoid(logits[:, 0])
        return torch.stack([1.0 - positive, positive], dim=1)
    return torch.softmax(logits, dim=1)


class ModelService:
    """The model behind ``camlens serve``: a :class:`camlens.runs.session.Session` (built from a
    spec given on the command line only), its layers, and the queue in front of it."""

    def __init__(
        self,
        session: Session,
        *,
        max_batch: int = 8,
        window: float = 0.005,
        max_pending: int = 256,
        precision: str = "auto",
    ) -> None:
        check_choice(precision, PRECISIONS, "--precision")
        self.session = session
        self.precision = precision
        self.layers, self.auto = session.layers()
        self.batcher = MicroBatcher(
            self._run, max_batch=max_batch, window=window, max_pending=max_pending
        )

    def request(
        self, image: np.ndarray | torch.Tensor, method: str, target: str | None, layer: str
    ) -> Request:
        """A checked request for ``image`` (uint8 RGB, or already :func:`resize_unit`'s tensor);
        ``CamlensValueError`` names the field that is wrong."""
        try:
            chosen = get(method).name
        except CamlensValueError:
            raise CamlensValueError(
                f"method: unknown method {shown(method)}; valid methods: "
                f"{', '.join(camlens_methods())}"
            ) from None
        layer = layer or "auto"
        known = [info.name for info in self.layers]
        if layer != "auto" and layer not in known:
            raise CamlensValueError(
                f"layer: expected 'auto' or one of the model's explainable layers "
                f"({', '.join(known)}), got {shown(layer)}"
            )
        unit = image if isinstance(image, torch.Tensor) else resize_unit(image, self.session.size)
        # "auto" stays "auto": the method chooses (RefineCAM takes several layers, FullGrad none)
        return Request(unit, chosen, layer, self.target(target))

    def target(self, text: str | None) -> int | str | None:
        """The ``target`` field as ``camlens explain --target`` reads it (the session's parser):
        "pred" or empty for the predicted class, a class index or a class name, "output:K" (the
        K-th output value of a model that is not a classifier)."""
        if text in (None, ""):
            return None
        try:
            index = self.session.target(text)
        except CamlensValueError:
            index = LABEL
        if isinstance(index, str) and output_value(index) is not None:
            return index
        if isinstance(index, str):  # "label", and several targets: camlens explain's
            raise CamlensValueError(
                f"target: expected 'pred', a class index 0..{self.session.classes - 1}, a class "
                f"name or output:K, got {shown(text)}"
            )
        return cast(int | None, index)

    @property
    def zero_shot(self) -> bool:
        """Whether the model's classes are text prompts that a client may set."""
        return callable(getattr(self.session.model, "set_prompts", None))

    def set_prompts(self, prompts: list[str]) -> list[str]:
        """An image-text model's new classes: ``prompts`` embedded (between batches), the
        session's class names and count updated; returns the class names."""
        if not self.zero_shot:
            raise CamlensValueError(
                "prompts: the served model is not an image-text model; serve open_clip:ARCH or "
                "hf:PATH_OR_NAME with --prompts to set prompts"
            )
        for text in prompts:
            if len(text) > MAX_PROMPT or "\x00" in text:
                raise CamlensValueError(
                    f"prompts: each prompt takes at most {MAX_PROMPT} characters and no NUL byte"
                )
        if len(prompts) > MAX_PROMPTS:
            raise CamlensValueError(f"prompts: at most {MAX_PROMPTS} prompts, got {len(prompts):,}")
        session = self.session
        with model_lock(session.model):
            names = session.model.set_prompts(prompts)
            session.names, session.classes = names, len(names)
            session._explainers.clear()
        return list(names)

    # ------------------------------------------------------------------ explaining
    def submit(self, request: Request) -> Future:
        """A future of the request's answer (see :meth:`_answer`)."""
        output = request.target if isinstance(request.target, str) else None
        return self.batcher.submit((request.method, request.layer, output), request)

    def _run(self, key: Hashable, requests: list[Request]) -> list[dict[str, Any]]:
        method, layer, output = cast(tuple[str, str, str | None], key)
        session = self.session
        x = session.native(torch.stack([request.unit for request in requests]))
        with model_lock(session.model), torch.no_grad():
            probs = probabilities(session.adapter.logits(x))
        predicted = probs.argmax(dim=1)
        targets: Any = output or [  # one output value for the batch: its requests share the key
            int(predicted[i]) if r.target is None else r.target for i, r in enumerate(requests)
        ]
        exp = session.explainer(method, layer, self.precision)(x, target=targets)
        return [self._answer(exp, i, probs[i], output) for i in range(len(requests))]

    def _answer(
        self, exp: Any, i: int, probs: torch.Tensor, output: str | None = None
    ) -> dict[str, Any]:
        """Image ``i``'s JSON answer: the top-5 of ``probs`` and its map as a base64 PNG; an
        output value's (``output``, "output:K") has no class name and no probability."""
        top = probs.topk(min(TOP, probs.numel()))
        target = int(exp.targets[i])
        height, width = exp.maps.shape[1:]
        return {
            "predicted": int(top.indices[0]),
            "top": [
                {"class": int(c), "name": self.session.name(int(c)), "probability": float(p)}
                for p, c in zip(top.values, top.indices)
            ],
            "target": target,
            "target_name": output or self.session.name(target),
            "probability": None if output else float(exp.probs[i]),
            "score": float(exp.scores[i]),
            "layer": exp.layer,
            "method": exp.method,
            "precision": exp.extra.get("precision"),
            "width": int(width),
            "height": int(height),
            "map": base64.b64encode(map_png(exp.maps[i].numpy())).decode("ascii"),
        }

    def close(self) -> None:
        self.batcher.close()
