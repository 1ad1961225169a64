"""CAM-ready classifiers and their checkpoints.

A :class:`Classifier` is ``normalise -> body -> global average pooling -> one nn.Linear``: it takes
float images in [0, 1] of shape (B, C, H, W) and returns logits (B, K), so ``cam`` applies to it
and ``layer="auto"`` resolves to its CAM layer (the body's last module, recorded as ``cam_layer``).

A checkpoint is a folder with ``model.safetensors`` (the state dict, no pickle) and
``camlens.json`` (architecture, class names, input size, normalisation, the CAM layer), plus
``validation.json`` when :func:`camlens.train` wrote it. It is written to a temporary folder next
to the destination and renamed into place, so a failure never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from camlens.backends import load_onnx
from camlens.backends.survey import layers
from camlens.errors import CamlensValueError, describe
from camlens.images.load import to_rgb
from camlens.models.architectures import Body, build_body
from camlens.models.files import BUNDLED, CONFIG, WEIGHTS, demo_path

FORMAT = "camlens-checkpoint"
VERSION = 1


class Classifier(nn.Module):
    """A GAP + Linear image classifier that owns its preprocessing.

    ``forward(x)``: ``x`` float (B, C, H, W) in [0, 1] (a one-channel batch is repeated to three
    channels for a three-channel model, as for X-rays); returns logits (B, K).

    Attributes:
        labels: the class names, index i is logit i.
        input_size: the (H, W) the model was trained at.
        cam_layer: the dotted name of the layer whose maps the head averages (the body's output:
            for ``camlens:smallvit``, its token grid); ``layer="auto"`` resolves to it.
        config: what ``camlens.json`` holds.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        body: nn.Sequential,
        features: int,
        labels: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        input_size: tuple[int, int],
        architecture: dict,
        cam_layer: str | None = None,
        meta: dict | None = None,
    ) -> None:
        super().__init__()
        if len(labels) < 2:
            raise CamlensValueError(f"a classifier needs at least 2 labels, got {list(labels)}")
        if len(mean) != len(std):
            raise CamlensValueError(f"mean and std differ in length: {mean} vs {std}")
        self.backbone = body
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(features, len(labels))
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.labels = [str(label) for label in labels]
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.channels = len(mean)
        self.architecture = dict(architecture)
        self.meta = dict(meta or {})
        self.cam_layer = cam_layer or self._find_cam_layer()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised input run through the body: the maps (B, C, h, w) the head averages."""
        if x.ndim != 4:
            raise CamlensValueError(f"expected x of shape (B, C, H, W), got {tuple(x.shape)}")
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != self.channels:
            raise CamlensValueError(
                f"expected x with {self.channels} channels (B, {self.channels}, H, W), got "
                f"{tuple(x.shape)}"
            )
        x = (x - self.mean) / self.std
        for block in self.backbone:  # block by block, so "auto" names the last block, not the body
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))

    @property
    def config(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "architecture": self.architecture,
            "labels": self.labels,
            "features": self.fc.in_features,
            "input_size": list(self.input_size),
            "preprocessing": {
                "range": [0, 1],
                "channels": self.channels,
                "resize": "whole image to input_size, bilinear, antialiased",
                "mean": self.mean.flatten().tolist(),
                "std": self.std.flatten().tolist(),
            },
            "cam_layer": self.cam_layer,
            **self.meta,
        }

    def load_images(self, images: Any) -> tuple[torch.Tensor, list]:
        """Files, PIL images or arrays as a batch for this model: the whole image resized to
        ``input_size``, floats in [0, 1] (B, 3, H, W); also returns the originals (uint8 RGB)."""
        if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
            images = [images]
        originals = [to_rgb(image) for image in images]
        batch = [to_uint8(original, self.input_size) for original in originals]
        return torch.stack(batch).float().div(255).to(self.fc.weight.device), originals

    def save(self, path: str | os.PathLike, files: dict[str, Any] | None = None) -> Path:
        """Write this model as a checkpoint folder; see :func:`save_checkpoint`."""
        return save_checkpoint(self, path, files)

    def _find_cam_layer(self) -> str:
        probe = torch.zeros(1, self.channels, *self.input_size, device=self.fc.weight.device)
        infos, _ = layers(self, probe)
        maps = [info.name for info in infos if info.layout.kind != "tokens"]
        if not maps:
            raise CamlensValueError("the classifier's body has no spatial map for CAM")
        return maps[-1]

    def extra_repr(self) -> str:
        return f"labels={self.labels}, input_size={self.input_size}, cam_layer={self.cam_layer!r}"


def to_uint8(image: Any, size: int | tuple[int, int]) -> torch.Tensor:
    """An image (path, PIL image, array) as uint8 RGB (3, H, W), resized whole to ``size``
    (bilinear, antialiased), as :class:`Classifier` models are trained and explained."""
    array = image if isinstance(image, np.ndarray) and image.ndim == 3 else to_rgb(image)
    tensor = torch.tensor(array).permute(2, 0, 1)
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if tuple(tensor.shape[1:]) == hw:
        return tensor
    resized = F.interpolate(tensor[None].float(), size=hw, mode="bilinear", antialias=True)
    return resized[0].round().clamp(0, 255).to(torch.uint8)


def check_destination(path: str | os.PathLike, argument: str = "checkpoint path") -> Path:
    """``path`` as a Path; raise if it exists and is neither a checkpoint nor an empty folder."""
    path = Path(path)
    exists = path.exists() and not (path / CONFIG).is_file()
    if exists and (not path.is_dir() or any(path.iterdir())):
        raise CamlensValueError(
            f"{argument} {str(path)!r} exists and is not a camlens checkpoint; pass a new folder "
            "name (an existing checkpoint is replaced)"
        )
    return path


def save_checkpoint(
    model: Classifier, path: str | os.PathLike, files: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to the folder ``path`` atomically (temporary folder, then rename).

    ``files``: more JSON files to write next to ``camlens.json`` (name -> object). An existing
    checkpoint at ``path`` is replaced; any other existing non-empty folder is refused.
    """
    from safetensors.torch import save_file

    if not isinstance(model, Classifier):
        raise CamlensValueError(
            f"save_checkpoint needs a camlens.Classifier, got {describe(model)}; camlens.train "
            "builds one"
        )
    path = check_destination(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(temp / WEIGHTS), metadata={"format": FORMAT})
        for name, content in {CONFIG: model.config, **(files or {})}.items():
            (temp / name).write_text(json.dumps(content, indent=2) + "\n")
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "checkpoint")
        os.replace(temp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return path


def checkpoint_folder(path: str | os.PathLike) -> Path:
    """The folder of a checkpoint: a bundled model's (:data:`BUNDLED`) or ``path`` itself."""
    return demo_path(str(path)) if str(path) in BUNDLED else Path(path)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``camlens.json`` of a checkpoint folder, checked."""
    folder = checkpoint_folder(path)
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise CamlensValueError(
            f"{str(path)!r} is not a camlens checkpoint: expected a folder with {CONFIG} and "
            f"{WEIGHTS} (camlens train writes one; 'demo' is the bundled model)"
        )
    try:
        config = json.loads((folder / CONFIG).read_text())
    except json.JSONDecodeError as error:
        raise CamlensValueError(f"{str(folder / CONFIG)!r} is not valid JSON: {error}") from error
    if config.get("format") != FORMAT or config.get("version", 0) > VERSION:
        raise CamlensValueError(
            f"{str(folder / CONFIG)!r} is not a camlens checkpoint of version <= {VERSION} "
            f"(format {config.get('format')!r}, version {config.get('version')!r})"
        )
    return config


def load_model(path: str | os.PathLike = "demo", device: str | torch.device = "cpu") -> Any:
    """Load a checkpoint folder (or ``"demo"`` / ``"demo-vit"``, the bundled CNN and vision
    transformer) as a :class:`Classifier`, or an ``.onnx`` file as a
    :class:`camlens.backends.onnx.OnnxModel` (run by ONNX Runtime on the CPU).

    Weights come from safetensors (no pickle); the model is returned in eval mode on ``device``.
    """
    if str(path).lower().endswith(".onnx"):
        return load_onnx(str(path))
    from safetensors.torch import load_file

    config = read_config(path)
    folder = checkpoint_folder(path)
    arch = config["architecture"]
    preprocessing = config["preprocessing"]
    body: Body = build_body(
        f"{arch['source']}:{arch['name']}",
        weights=None,
        kwargs=arch.get("kwargs"),
        image_size=int(config["input_size"][0]),
    )
    known = ("format", "version", "architecture", "labels", "features", "input_size")
    meta = {k: v for k, v in config.items() if k not in (*known, "preprocessing", "cam_layer")}
    model = Classifier(
        body.module,
        int(config["features"]),
        config["labels"],
        preprocessing["mean"],
        preprocessing["std"],
        tuple(config["input_size"]),
        arch,
        cam_layer=config["cam_layer"],
        meta=meta,
    )
    state = load_file(str(folder / WEIGHTS))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CamlensValueError(
            f"{str(folder / WEIGHTS)!r} does not fit the architecture in {CONFIG}: "
            f"{str(error).splitlines()[0]}"
        ) from error
    return model.to(device).eval()


__all__ = ["Classifier", "load_model", "read_config", "save_checkpoint"]
