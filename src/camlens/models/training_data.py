"""The image folder :func:`camlens.train` learns from: classes and images found and checked
(:func:`scan`), decoded as a dataset (:class:`ImageFolderData`) and augmented (:func:`augment`).

One sub-folder per class (``train/`` and ``val/`` sub-folders are used when both exist, otherwise a
seeded stratified split holds out ``val_split`` of each class); every image is decoded once when
the folder is scanned, and one that fails is skipped and listed.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from camlens.errors import CamlensValueError
from camlens.images.decode import Failure, read_image, scan_folder
from camlens.images.pixels import IMAGE_SUFFIXES
from camlens.models.checkpoint import to_uint8

#: Folders smaller than this many bytes (decoded, at image_size) are kept in memory.
CACHE_BYTES = 1 << 29


@dataclass
class Split:
    """Class names, (path, label) lists for training and validation, and skipped files."""

    classes: list[str]
    train: list[tuple[Path, int]]
    val: list[tuple[Path, int]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


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
