"""Training CAM-ready classifiers on an image folder: ``camlens.train(data_dir, out)``.

The folder holds one sub-folder per class (``train/`` and ``val/`` sub-folders are used when both
exist, otherwise a seeded stratified split holds out ``val_split`` of each class). Images are
decoded as ``camlens explain`` decodes them (:func:`camlens.images.decode.read_image`: RGB, EXIF
orientation) and resized whole to ``image_size`` x ``image_size``; every image is decoded once
when the folder is scanned, and one that fails (a truncated JPEG, a file that is no image) is
skipped and listed. Training adds a random resized crop and a horizontal flip.
The backbone's head is replaced by global average pooling + one linear layer
(:class:`camlens.Classifier`), so ``cam`` applies. The best model on the validation set is written
as a checkpoint (atomically) whenever it improves; the final report (accuracy, per-class precision
and recall, confusion matrix) is printed and saved as ``validation.json`` in the checkpoint.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from camlens.errors import CamlensValueError
from camlens.images.decode import Failure, read_image, scan_folder
from camlens.images.load import IMAGE_SUFFIXES
from camlens.models.checkpoint import Classifier, check_destination, save_checkpoint, to_uint8

#: Folders smaller than this many bytes (decoded, at image_size) are kept in memory.
CACHE_BYTES = 1 << 29


@dataclass
class Split:
    """Class names, (path, label) lists for training and validation, and skipped files."""

    classes: list[str]
    train: list[tuple[Path, int]]
    val: list[tuple[Path, int]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class TrainResult:
    """What :func:`train` returns: the best model, where it is, its report and per-epoch history."""

    model: Classifier
    path: Path
    report: dict[str, Any]
    history: list[dict[str, float]]


# ---------------------------------------------------------------- the folder
def _class_folders(folder: Path, skipped: list[tuple[Path, str]]) -> dict[str, list[Path]]:
    """The image files of each class folder (hidden ones skipped); a sub-folder that cannot be
    read is added to ``skipped`` with the reason."""
    failures: list[Failure] = []
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = {c.name: scan_folder(c, failures)[0] for c in classes}
    skipped += [(Path(f.path), f.reason) for f in failures]
    return found


def _check_image(path: Path, size: int | None) -> str | None:
    """None when ``path`` decodes as an image (as :func:`read_image` reads it for a model of
    side ``size``), else the reason."""
    try:
        read_image(path, size)
    except ValueError as error:
        return str(error)
    return None


def scan(
    data_dir: str | os.PathLike, val_split: float = 0.2, seed: int = 0, size: int | None = None
) -> Split:
    """Find classes and images in ``data_dir``; images that do not decode (for a model of side
    ``size``) are skipped and listed."""
    root = Path(data_dir)
    if not root.is_dir():
        raise CamlensValueError(
            f"DATA_DIR {str(root)!r} is not a folder; expected one sub-folder per class"
        )
    parts = {"train": root / "train", "val": root / "val"}
    layout = "train/val" if all(p.is_dir() for p in parts.values()) else "flat"
    skipped: list[tuple[Path, str]] = []
    folders = {"train": _class_folders(parts["train"], skipped)} if layout == "train/val" else {}
    if layout == "train/val":
        folders["val"] = _class_folders(parts["val"], skipped)
        if sorted(folders["train"]) != sorted(folders["val"]):
            raise CamlensValueError(
                f"{str(parts['train'])!r} and {str(parts['val'])!r} must hold the same class "
                f"folders, got {sorted(folders['train'])} and {sorted(folders['val'])}"
            )
    else:
        folders["all"] = _class_folders(root, skipped)
    classes = sorted(next(iter(folders.values())))
    where = str(parts["train"] if layout == "train/val" else root)
    if len(classes) < 2:
        raise CamlensValueError(
            f"DATA_DIR {where!r} has {len(classes)} class folder(s) {classes}; training needs at "
            "least 2 (one sub-folder per class, e.g. DATA_DIR/cats and DATA_DIR/dogs)"
        )
    kept: dict[str, dict[str, list[Path]]] = {}
    every = [p for by_class in folders.values() for name in classes for p in by_class[name]]
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1), "camlens-scan") as pool:
        reasons = dict(zip(every, pool.map(lambda p: _check_image(p, size), every)))
    for part, by_class in folders.items():
        kept[part] = {}
        for name in classes:
            good = []
            for path in by_class[name]:
                reason = reasons[path]
                if reason is None:
                    good.append(path)
                else:
                    skipped.append((path, reason))
            if not good:
                folder = parts.get(part, root) / name
                raise CamlensValueError(
                    f"class folder {str(folder)!r} has no readable images (looked for "
                    f"{', '.join(sorted(IMAGE_SUFFIXES))}); add images or remove the folder"
                )
            kept[part][name] = good
    if layout == "train/val":
        train = [(p, i) for i, c in enumerate(classes) for p in kept["train"][c]]
        val = [(p, i) for i, c in enumerate(classes) for p in kept["val"][c]]
        return Split(classes, train, val, skipped)
    if not 0 < val_split < 1:
        raise CamlensValueError(f"val_split must be in (0, 1), got {val_split!r}")
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for index, name in enumerate(classes):
        paths = kept["all"][name]
        if len(paths) < 2:
            raise CamlensValueError(
                f"class {name!r} has {len(paths)} readable image; a train/validation split needs "
                "at least 2 per class"
            )
        order = torch.randperm(len(paths), generator=generator).tolist()
        cut = min(len(paths) - 1, max(1, round(len(paths) * val_split)))
        val += [(paths[i], index) for i in sorted(order[:cut])]
        train += [(paths[i], index) for i in sorted(order[cut:])]
    return Split(classes, train, val, skipped)


class ImageFolderData(torch.utils.data.Dataset):
    """(path, label) pairs as uint8 (3, S, S) tensors: the whole image resized to S x S."""

    def __init__(self, items: list[tuple[Path, int]], size: int, cache: bool = False) -> None:
        self.items = items
        self.size = size
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.cache is not None and index in self.cache:
            return self.cache[index], self.items[index][1]
        path, label = self.items[index]
        image = to_uint8(read_image(path, self.size), self.size)
        if self.cache is not None:
            self.cache[index] = image
        return image, label


def augment(
    x: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float],
    flip: bool,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Random resized crop (area fraction in ``scale``, aspect in ``ratio``) and horizontal
    flip, batched with one affine resampling; ``x`` float (B, C, S, S)."""
    batch = x.shape[0]
    area = torch.empty(batch).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(batch).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = log_ratio.exp()
    width = (area * aspect).sqrt().clamp(max=1)
    height = (area / aspect).sqrt().clamp(max=1)
    cx = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - width)
    cy = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - height)
    sign = torch.ones(batch)
    if flip:
        sign = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = height, cy
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


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
    from camlens.models.architectures import build_body

    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1)):
        if not isinstance(value, int) or value < low:
            raise CamlensValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise CamlensValueError(f"image_size must be an int >= 8, got {image_size!r}")
    if not 0 < crop_scale <= 1:
        raise CamlensValueError(f"crop_scale must be in (0, 1], got {crop_scale!r}")
    out = check_destination(out, "out")
    run_device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    )
    echo = _Echo(progress)
    split = scan(data_dir, val_split, seed, image_size)
    for path, reason in split.skipped:
        echo(f"skipped unreadable image {path} ({reason})")
    classes = split.classes
    echo(
        f"{len(classes)} classes, {len(split.train)} training and {len(split.val)} validation "
        f"images" + (f", {len(split.skipped)} skipped" if split.skipped else "")
    )

    torch.manual_seed(seed)
    body = build_body(backbone, weights, backbone_kwargs, image_size)
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
    model = Classifier(
        body.module, body.features, classes, body.mean, body.std,
        (image_size, image_size), body.architecture, meta=meta,
    ).to(run_device)  # fmt: skip
    if freeze:
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(False)
    parameters = [p for p in model.parameters() if p.requires_grad]

    cache = (len(split.train) + len(split.val)) * 3 * image_size**2 <= CACHE_BYTES
    generator = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(
        ImageFolderData(split.train, image_size, cache and workers == 0),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        num_workers=workers,
    )
    val_loader = torch.utils.data.DataLoader(
        ImageFolderData(split.val, image_size, cache and workers == 0),
        batch_size=max(batch_size, 64),
        num_workers=workers,
    )
    counts = torch.bincount(
        torch.tensor([label for _, label in split.train]), minlength=len(classes)
    )
    weight = (counts.sum() / (len(classes) * counts.clamp(min=1))).float() if balanced else None
    loss_fn = nn.CrossEntropyLoss(weight=None if weight is None else weight.to(run_device))
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * len(train_loader), pct_start=0.25
    )

    history: list[dict[str, float]] = []
    best: tuple[float, float] | None = None  # (accuracy, -loss)
    best_state: dict[str, torch.Tensor] = {}
    started = time.perf_counter()
    with _deterministic(run_device), echo.bar() as bar:
        for epoch in range(1, epochs + 1):
            model.train()
            if freeze:
                model.backbone.eval()  # frozen batch-norm statistics too
            task = bar.add_task(f"epoch {epoch}/{epochs}", total=len(train_loader), stats="")
            seen, loss_sum, correct = 0, 0.0, 0
            for images, labels in train_loader:
                x = images.to(run_device).float() / 255
                if augmentation:
                    x = augment(x, generator, (crop_scale, 1.0), flip)
                labels = labels.to(run_device)
                logits = model(x)
                loss = loss_fn(logits, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                seen += len(labels)
                loss_sum += float(loss.detach()) * len(labels)
                correct += int((logits.argmax(1) == labels).sum())
                stats = f"loss {loss_sum / seen:.4f}  acc {correct / seen:.3f}"
                bar.update(task, advance=1, stats=stats)
            confusion, val_loss = _evaluate(model, val_loader, run_device, len(classes))
            accuracy = float(confusion.diagonal().sum() / confusion.sum())
            history.append(
                {
                    "epoch": epoch,
                    "loss": loss_sum / seen,
                    "accuracy": correct / seen,
                    "val_loss": val_loss,
                    "val_accuracy": accuracy,
                    "seconds": time.perf_counter() - started,
                }
            )
            improved = best is None or (accuracy, -val_loss) > best
            bar.remove_task(task)
            echo(
                f"epoch {epoch}/{epochs}  {stats}  val_loss {val_loss:.4f}  val_acc "
                f"{accuracy:.4f}  {history[-1]['seconds']:.0f} s"
            )
            if improved:
                best = (accuracy, -val_loss)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                model.meta["training"].update(best_epoch=epoch, val_accuracy=accuracy)
                save_checkpoint(model, out)

    model.load_state_dict(best_state)
    model.eval()
    confusion, _ = _evaluate(model, val_loader, run_device, len(classes))
    final = report(confusion, classes)
    final.update(
        best_epoch=model.meta["training"]["best_epoch"],
        seconds=round(time.perf_counter() - started, 1),
        skipped=[{"path": str(p), "reason": r} for p, r in split.skipped],
        history=history,
    )
    save_checkpoint(model, out, files={"validation.json": final})
    echo.report(final)
    echo(f"checkpoint written to {out}")
    return TrainResult(model=model, path=out, report=final, history=history)


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
