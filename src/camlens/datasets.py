"""Datasets for training and checking localisation: cluttered handwritten digits.

:func:`cluttered_digits` places scikit-learn's real 8x8 handwritten digits (Alpaydin & Kaynak, UCI
"optical recognition of handwritten digits", 1797 images), upscaled, at random positions on a
canvas strewn with clutter (fragments of other digits and noise), and returns each digit's
ground-truth box, so a map can be scored against where the evidence really is. Source digits are
split once (stratified, fixed) into a ``"train"`` part and a ``"test"`` part, so held-out canvases
never reuse a training digit.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from camlens.errors import CamlensValueError

#: Fraction of the 1797 source digits kept for the "test" part (stratified by class, fixed seed).
TEST_FRACTION = 1 / 3
LABELS = [str(d) for d in range(10)]


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise CamlensValueError(
            "camlens.datasets.cluttered_digits needs scikit-learn for its handwritten digits, "
            "which is not installed; install it with pip install 'camlens[train]'"
        ) from error
    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)


def _source(part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The source digits (N, 8, 8) in [0, 1] and their labels for ``part``."""
    if part not in ("train", "test", "all"):
        raise CamlensValueError(f"digits must be 'train', 'test' or 'all', got {part!r}")
    images, labels = _sklearn_digits()
    if part != "all":
        order = np.random.default_rng(1797).permutation(len(labels))
        keep = []
        for digit in range(10):
            members = order[labels[order] == digit]
            cut = round(len(members) * TEST_FRACTION)
            keep.extend(members[:cut] if part == "test" else members[cut:])
        index = np.sort(np.asarray(keep))
        images, labels = images[index], labels[index]
    return torch.from_numpy(images), torch.from_numpy(labels)


def cluttered_digits(
    n: int,
    size: int = 64,
    seed: int = 0,
    *,
    digits: str = "all",
    scale: tuple[int, int] = (20, 28),
    fragments: int = 4,
    noise: float = 0.08,
    channels: int = 3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` cluttered-digit images with their labels and ground-truth boxes.

    Each canvas holds one handwritten digit, upscaled (bilinear) to a random side in ``scale`` and
    placed at a random position, plus ``fragments`` pieces of other digits (a random quarter to
    half of a digit, at the same scale) and uniform noise of amplitude ``noise``; pixels combine
    by maximum. ``digits``: which source digits to use ("train", "test": a fixed stratified third,
    or "all").

    Returns ``(images, labels, boxes)``: float32 (n, channels, size, size) in [0, 1] (gray repeated
    over the channels), int64 (n,), and int64 (n, 4) boxes ``x0, y0, x1, y1`` in pixels, both
    corners inside: the tight box of the digit's ink (pixels above 0.25).
    """
    if not isinstance(n, int) or n < 1:
        raise CamlensValueError(f"n must be a positive int, got {n!r}")
    low, high = int(scale[0]), int(scale[1])
    if not 8 <= low <= high <= size:
        raise CamlensValueError(
            f"scale must be (low, high) with 8 <= low <= high <= size={size}, got {scale!r}"
        )
    if channels not in (1, 3):
        raise CamlensValueError(f"channels must be 1 or 3, got {channels!r}")
    source, source_labels = _source(digits)
    generator = torch.Generator().manual_seed(seed)

    def randint(lo: int, hi: int) -> int:  # inclusive
        return int(torch.randint(lo, hi + 1, (1,), generator=generator))

    images = torch.rand(n, size, size, generator=generator) * noise
    labels = torch.empty(n, dtype=torch.int64)
    boxes = torch.empty(n, 4, dtype=torch.int64)
    scaled: dict[int, torch.Tensor] = {}  # every source digit upscaled (bilinear) to each side
    for i in range(n):
        side = randint(low, high)
        if side not in scaled:
            scaled[side] = F.interpolate(source[:, None], size=(side, side), mode="bilinear")[:, 0]
        canvas = images[i]
        for _ in range(fragments):  # clutter first, the digit on top
            piece = scaled[side][randint(0, len(source) - 1)]
            ph, pw = randint(side // 4, side // 2), randint(side // 4, side // 2)
            top, left = randint(0, side - ph), randint(0, side - pw)
            piece = piece[top : top + ph, left : left + pw]
            y, x = randint(0, size - ph), randint(0, size - pw)
            region = canvas[y : y + ph, x : x + pw]
            torch.maximum(region, piece, out=region)
        index = randint(0, len(source) - 1)
        digit = scaled[side][index].clamp(0, 1)
        y, x = randint(0, size - side), randint(0, size - side)
        region = canvas[y : y + side, x : x + side]
        torch.maximum(region, digit, out=region)
        rows = torch.nonzero((digit > 0.25).any(dim=1))[:, 0]
        cols = torch.nonzero((digit > 0.25).any(dim=0))[:, 0]
        boxes[i] = torch.tensor(
            [x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]), y + int(rows[-1])]
        )
        labels[i] = source_labels[index]
    images = images.clamp(0, 1)[:, None].expand(n, channels, size, size).contiguous()
    return images, labels, boxes


def write_image_folder(
    folder: str | Path,
    images: torch.Tensor,
    labels: torch.Tensor,
    boxes: torch.Tensor | None = None,
    class_names: list[str] | None = None,
) -> list[Path]:
    """Write images as PNGs in the image-folder layout ``folder/CLASS/NNNNN.png``.

    With ``boxes``, ``folder/boxes.csv`` lists ``path,label,x0,y0,x1,y1`` (path relative to
    ``folder``). Returns the written paths.
    """
    from PIL import Image

    names = class_names or LABELS
    folder = Path(folder)
    paths: list[Path] = []
    rows = []
    pixels = (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu()
    for i, (image, label) in enumerate(zip(pixels, labels.tolist())):
        path = folder / names[label] / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
        if array.ndim == 3 and (image == image[:1]).all():
            array = array[..., 0]  # gray repeated: store one channel
        Image.fromarray(array).save(path)
        paths.append(path)
        if boxes is not None:
            rows.append([path.relative_to(folder).as_posix(), label, *boxes[i].tolist()])
    if boxes is not None:
        with open(folder / "boxes.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "x0", "y0", "x1", "y1"])
            writer.writerows(rows)
    return paths


def read_boxes(path: str | Path) -> tuple[list[Path], torch.Tensor, torch.Tensor]:
    """Read a ``boxes.csv`` written by :func:`write_image_folder`: paths, labels, boxes (N, 4)."""
    path = Path(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise CamlensValueError(f"boxes file {str(path)!r} has no rows")
    paths = [path.parent / row["path"] for row in rows]
    labels = torch.tensor([int(row["label"]) for row in rows], dtype=torch.int64)
    boxes = torch.tensor(
        [[int(row[k]) for k in ("x0", "y0", "x1", "y1")] for row in rows], dtype=torch.int64
    )
    return paths, labels, boxes


__all__ = ["LABELS", "cluttered_digits", "read_boxes", "write_image_folder"]
