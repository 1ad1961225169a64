"""Training CAM-ready classifiers on an image folder: ``camlens.train(data_dir, out)``.

The folder holds one sub-folder per class (``train/`` and ``val/`` sub-folders are used when both
exist, otherwise a seeded stratified split holds out ``val_split`` of each class); its scan, dataset
and augmentation are in :mod:`camlens.models.training_data`. Images are decoded as ``camlens
explain`` decodes them (:func:`camlens.images.decode.read_image`: RGB, EXIF orientation) and
resized whole to ``image_size`` x ``image_size``; every image is decoded once when the folder is
scanned, and one that fails (a truncated JPEG, a file that is no image) is skipped and listed.
Training adds a random resized crop and a horizontal flip. The backbone's head is replaced by
global average pooling + one linear layer (:class:`camlens.Classifier`), so ``cam`` applies. The
best model on the validation set is written as a checkpoint (atomically) whenever it improves; the
final report (accuracy, per-class precision and recall, confusion matrix) is printed and saved as
``validation.json`` in the checkpoint.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from camlens.errors import CamlensValueError
from camlens.models.architectures import build_body
from camlens.models.checkpoint import Classifier, check_destination, save_checkpoint
from camlens.models.training_data import CACHE_BYTES, ImageFolderData, Split, augment, scan


@dataclass
class TrainResult:
    """What :func:`train` returns: the best model, where it is, its report and per-epoch history."""

    model: Classifier
    path: Path
    report: dict[str, Any]
    history: list[dict[str, float]]


# ---------------------------------------------------------------- metrics
def report(confusion: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/support from a confusion matrix (rows: true)."""
    confusion = confusion.double()
    hits = confusion.diagonal()
    predicted, actual = confusion.sum(0), confusion.sum(1)
    per_class = {}
    for i, name in enumerate(classes):
        per_class[name] = {
            "precision": float(hits[i] / predicted[i]) if predicted[i] else 0.0,
            "recall": float(hits[i] / actual[i]) if actual[i] else 0.0,
            "support": int(actual[i]),
        }
    return {
        "accuracy": float(hits.sum() / confusion.sum().clamp(min=1)),
        "classes": classes,
        "per_class": per_class,
        "confusion": confusion.long().tolist(),
    }


def _evaluate(
    model: Classifier, loader: torch.utils.data.DataLoader, device: torch.device, classes: int
) -> tuple[torch.Tensor, float]:
    """Confusion matrix (K, K) and mean loss of ``model`` on ``loader``."""
    confusion = torch.zeros(classes, classes, dtype=torch.int64)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for images, labels in loader:
            x = images.to(device).float() / 255
            logits = model(x)
            total += float(F.cross_entropy(logits, labels.to(device), reduction="sum"))
            count += len(labels)
            index = labels * classes + logits.argmax(1).cpu()
            confusion += torch.bincount(index, minlength=classes * classes).view(classes, classes)
    return confusion, total / max(count, 1)


@contextmanager
def _deterministic(device: torch.device):
    """Deterministic algorithms on the CPU (on CUDA they would need CUBLAS_WORKSPACE_CONFIG)."""
    previous = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


# ---------------------------------------------------------------- training
def train(
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    backbone: str = "resnet18",
    weights: str | None = "DEFAULT",
    backbone_kwargs: dict | None = None,
    freeze: bool = False,
    epochs: int = 10,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 32,
    image_size: int = 224,
    augmentation: bool = True,
    flip: bool = True,
    crop_scale: float = 0.35,
    balanced: bool = False,
    val_split: float = 0.2,
    seed: int = 0,
    workers: int = 0,
    device: str = "auto",
    progress: bool = False,
) -> TrainResult:
    """Fine-tune (or, with ``freeze``, train only the head of) ``backbone`` on ``data_dir``.

    ``backbone``: a torchvision model name, ``timm:NAME`` or ``camlens:smallcnn``; ``weights``:
    "DEFAULT" (pretrained, downloaded), a local weights file, or None/"none" (random). The head is
    replaced by GAP + Linear. AdamW with a one-cycle learning-rate schedule peaking at ``lr``;
    cross-entropy, weighted by inverse class frequency with ``balanced``. Seeded and
    deterministic on the CPU. Returns a :class:`TrainResult`; the checkpoint is at ``out``.
    ``progress``: print a progress bar per epoch, the epochs' scores and the final report
    (``camlens train`` does); by default the call prints nothing.
    """
    _check_settings(epochs, batch_size, image_size, crop_scale)
    out = check_destination(out, "out")
    run_device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    )
    echo = _Echo(progress)
    split = _scan_and_tell(data_dir, val_split, seed, image_size, echo)
    torch.manual_seed(seed)
    meta = {
        "training": {
            "data_dir": str(data_dir),
            "backbone": backbone,
            "weights": weights if weights is None or weights == "DEFAULT" else str(weights),
            "freeze": freeze,
            "epochs": epochs,
            "lr": lr,
            "weight_decay": weight_decay,
            "batch_size": batch_size,
            "augmentation": augmentation,
            "flip": flip,
            "crop_scale": crop_scale,
            "balanced": balanced,
            "seed": seed,
        }
    }
    model = _classifier(split.classes, backbone, weights, backbone_kwargs, image_size, meta)
    model = model.to(run_device)
    if freeze:
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    train_loader, val_loader = _loaders(split, image_size, batch_size, workers, generator)
    loss_fn, optimizer, schedule = _objective(
        model, split, balanced, lr, weight_decay, epochs * len(train_loader), run_device
    )
    fit = _Fit(
        model, run_device, train_loader, val_loader, len(split.classes), loss_fn, optimizer,
        schedule, generator, (crop_scale, 1.0) if augmentation else None, flip, freeze,
    )  # fmt: skip
    history: list[dict[str, float]] = []
    best: tuple[float, float] | None = None  # (accuracy, -loss)
    best_state: dict[str, torch.Tensor] = {}
    started = time.perf_counter()
    with _deterministic(run_device), echo.bar() as bar:
        for epoch in range(1, epochs + 1):
            task = bar.add_task(f"epoch {epoch}/{epochs}", total=len(train_loader), stats="")
            loss, accuracy_train, stats = fit.epoch(bar, task)
            confusion, val_loss = fit.validate()
            accuracy = float(confusion.diagonal().sum() / confusion.sum())
            history.append(
                {
                    "epoch": epoch,
                    "loss": loss,
                    "accuracy": accuracy_train,
                    "val_loss": val_loss,
                    "val_accuracy": accuracy,
                    "seconds": time.perf_counter() - started,
                }
            )
            bar.remove_task(task)
            echo(
                f"epoch {epoch}/{epochs}  {stats}  val_loss {val_loss:.4f}  val_acc "
                f"{accuracy:.4f}  {history[-1]['seconds']:.0f} s"
            )
            if best is None or (accuracy, -val_loss) > best:
                best = (accuracy, -val_loss)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                model.meta["training"].update(best_epoch=epoch, val_accuracy=accuracy)
                save_checkpoint(model, out)
    model.load_state_dict(best_state)
    final = _final_report(fit, split, history, started)
    save_checkpoint(model, out, files={"validation.json": final})
    echo.report(final)
    echo(f"checkpoint written to {out}")
    return TrainResult(model=model, path=out, report=final, history=history)


def _check_settings(epochs: int, batch_size: int, image_size: int, crop_scale: float) -> None:
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1)):
        if not isinstance(value, int) or value < low:
            raise CamlensValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise CamlensValueError(f"image_size must be an int >= 8, got {image_size!r}")
    if not 0 < crop_scale <= 1:
        raise CamlensValueError(f"crop_scale must be in (0, 1], got {crop_scale!r}")


def _scan_and_tell(
    data_dir: str | os.PathLike, val_split: float, seed: int, size: int, echo: _Echo
) -> Split:
    """:func:`scan`, telling what was found and skipped."""
    split = scan(data_dir, val_split, seed, size)
    for path, reason in split.skipped:
        echo(f"skipped unreadable image {path} ({reason})")
    echo(
        f"{len(split.classes)} classes, {len(split.train)} training and {len(split.val)} "
        f"validation images" + (f", {len(split.skipped)} skipped" if split.skipped else "")
    )
    return split


def _classifier(
    classes: list[str],
    backbone: str,
    weights: str | None,
    backbone_kwargs: dict | None,
    image_size: int,
    meta: dict[str, Any],
) -> Classifier:
    """The backbone with a GAP + Linear head for ``classes``."""
    body = build_body(backbone, weights, backbone_kwargs, image_size)
    return Classifier(
        body.module, body.features, classes, body.mean, body.std,
        (image_size, image_size), body.architecture, meta=meta,
    )  # fmt: skip


def _loaders(
    split: Split, size: int, batch_size: int, workers: int, generator: torch.Generator
) -> tuple[DataLoader, DataLoader]:
    """Shuffled training and ordered validation loaders (decoded images kept in memory when the
    folder is small and loading runs in this process)."""
    cache = (len(split.train) + len(split.val)) * 3 * size**2 <= CACHE_BYTES and workers == 0
    train_loader = DataLoader(
        ImageFolderData(split.train, size, cache),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        num_workers=workers,
    )
    val_loader = DataLoader(
        ImageFolderData(split.val, size, cache),
        batch_size=max(batch_size, 64),
        num_workers=workers,
    )
    return train_loader, val_loader


def _objective(
    model: Classifier,
    split: Split,
    balanced: bool,
    lr: float,
    weight_decay: float,
    steps: int,
    device: torch.device,
) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    """Cross-entropy (weighted by inverse class frequency when ``balanced``), AdamW on the
    trainable parameters and a one-cycle schedule peaking at ``lr`` over ``steps``."""
    classes = len(split.classes)
    counts = torch.bincount(torch.tensor([label for _, label in split.train]), minlength=classes)
    weight = (counts.sum() / (classes * counts.clamp(min=1))).float() if balanced else None
    loss_fn = nn.CrossEntropyLoss(weight=None if weight is None else weight.to(device))
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=0.25
    )
    return loss_fn, optimizer, schedule


@dataclass
class _Fit:
    """One training run's model, data, objective and augmentation (``crop``: the random resized
    crop's area range, None for no augmentation)."""

    model: Classifier
    device: torch.device
    train: DataLoader
    val: DataLoader
    classes: int
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any
    generator: torch.Generator
    crop: tuple[float, float] | None
    flip: bool
    freeze: bool

    def epoch(self, bar: Any, task: Any) -> tuple[float, float, str]:
        """One pass over the training data, advancing ``task`` of the progress ``bar`` with the
        running stats after each batch; returns the mean loss, the accuracy and the stats line."""
        self.model.train()
        if self.freeze:
            self.model.backbone.eval()  # frozen batch-norm statistics too
        seen, loss_sum, correct, stats = 0, 0.0, 0, ""
        for images, labels in self.train:
            x = images.to(self.device).float() / 255
            if self.crop is not None:
                x = augment(x, self.generator, self.crop, self.flip)
            labels = labels.to(self.device)
            logits = self.model(x)
            loss = self.loss_fn(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            seen += len(labels)
            loss_sum += float(loss.detach()) * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            stats = f"loss {loss_sum / seen:.4f}  acc {correct / seen:.3f}"
            bar.update(task, advance=1, stats=stats)
        return loss_sum / seen, correct / seen, stats

    def validate(self) -> tuple[torch.Tensor, float]:
        """The confusion matrix and mean loss on the validation data."""
        return _evaluate(self.model, self.val, self.device, self.classes)


def _final_report(
    fit: _Fit, split: Split, history: list[dict[str, float]], started: float
) -> dict[str, Any]:
    """The validation report of the best model (``fit.model``, put in eval mode)."""
    fit.model.eval()
    confusion, _ = fit.validate()
    final = report(confusion, split.classes)
    final.update(
        best_epoch=fit.model.meta["training"]["best_epoch"],
        seconds=round(time.perf_counter() - started, 1),
        skipped=[{"path": str(p), "reason": r} for p, r in split.skipped],
        history=history,
    )
    return final


class _Echo:
    """Console output of :func:`train`: a rich progress bar per epoch and the final report."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        if enabled:
            from rich.console import Console

            self.console = Console(highlight=False)
            if not self.console.is_terminal:
                self.console.width = 160  # a log file: room for a 10-class confusion matrix

    def __call__(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, markup=False)

    @contextmanager
    def bar(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
        )
        console = getattr(self, "console", None)
        with Progress(*columns, console=console, disable=not self.enabled, transient=True) as p:
            yield p

    def report(self, final: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from rich.table import Table

        classes = final["classes"]
        table = Table(title=f"validation accuracy {final['accuracy']:.4f}")
        for column in ("class", "precision", "recall", "support", *classes):
            table.add_column(column, justify="left" if column == "class" else "right")
        for name, row in zip(classes, final["confusion"]):
            stats = final["per_class"][name]
            table.add_row(
                name,
                f"{stats['precision']:.3f}",
                f"{stats['recall']:.3f}",
                str(stats["support"]),
                *(str(v) for v in row),
            )
        self.console.print(table)
        self.console.print("rows: true class; columns: predicted class", markup=False)


__all__ = [
    "CACHE_BYTES",
    "ImageFolderData",
    "Split",
    "TrainResult",
    "augment",
    "report",
    "scan",
    "train",
]
