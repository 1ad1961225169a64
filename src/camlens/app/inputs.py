"""Paths in, decoded batches out: file collection, decoding ahead of the model, folder labels.

``collect`` expands files, folders (recursive, hidden files skipped) and globs; ``stream`` decodes
them in background threads, a batch at a time and a few batches ahead of the model, each image
kept at its own size (for overlays) and resized whole to the model's side (for the model). A file
that cannot be decoded becomes a :class:`Failure` with its reason; the stream goes on.
"""

from __future__ import annotations

import glob
import os
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from camlens.io import IMAGE_SUFFIXES


@dataclass
class Failure:
    """An input that was skipped, and why."""

    path: str
    reason: str


@dataclass
class Batch:
    """Decoded images: ``paths``, the uint8 RGB ``images`` at their own size, ``unit`` the
    (B, 3, S, S) [0, 1] batch the model sees (None when every file failed), the ``failures``
    among this batch's files and the seconds spent decoding."""

    paths: list[Path]
    images: list[np.ndarray]
    unit: torch.Tensor | None
    failures: list[Failure] = field(default_factory=list)
    load_s: float = 0.0


def collect(
    paths: Sequence[str | os.PathLike], exclude: Path | None = None
) -> tuple[list[Path], list[Failure]]:
    """Expand files, folders (recursive, hidden files skipped) and globs into files, in order.

    Returns ``(files, failures)``; a path that does not exist, an empty folder or a glob without
    a match is a failure. Files under ``exclude`` (the output folder) are left out.
    """
    files: list[Path] = []
    failures: list[Failure] = []
    seen: set[Path] = set()
    skip = exclude.resolve() if exclude is not None else None

    def add(path: Path) -> None:
        resolved = path.resolve()
        if skip is not None and skip in resolved.parents:
            return
        if resolved not in seen:
            seen.add(resolved)
            files.append(resolved)

    for item in paths:
        text = os.fspath(item)
        path = Path(text)
        if path.is_file():
            add(path)
        elif path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                failures.append(Failure(text, "folder holds no files"))
            for p in found:
                add(p)
        elif any(c in text for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                failures.append(Failure(text, "no file matches this pattern"))
            for p in matches:
                add(p)
        else:
            failures.append(Failure(text, "no such file or folder"))
    return files, failures


def image_files(folder: Path, argument: str = "--data") -> list[Path]:
    """The image files below ``folder`` (by suffix, sorted); an error names what is missing."""
    from camlens.errors import CamlensValueError

    if not folder.is_dir():
        raise CamlensValueError(f"{argument} {str(folder)!r} is not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CamlensValueError(
            f"{argument} {str(folder)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return files


def read_image(path: Path | bytes) -> np.ndarray:
    """Decode an image file (or its bytes) as uint8 RGB; raise ``ValueError`` with a short reason
    otherwise."""
    import io

    from PIL import Image, UnidentifiedImageError

    from camlens.io import to_rgb

    try:
        size = len(path) if isinstance(path, bytes) else path.stat().st_size
    except OSError as error:
        raise ValueError(f"cannot be read ({error.strerror})") from error
    if size == 0:
        raise ValueError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as opened:
            opened.load()
            return np.array(to_rgb(opened))
    except UnidentifiedImageError as error:
        raise ValueError("not an image (Pillow cannot identify its format)") from error
    except ImportError as error:  # ultralytics' patched Image.open looks for a HEIF plugin
        raise ValueError(f"not an image (Pillow cannot identify its format: {error})") from error
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"corrupt or truncated image ({error})") from error


def decode(
    paths: Sequence[Path], size: int, read: Callable[[Path], np.ndarray] = read_image
) -> Batch:
    """Decode ``paths`` into one :class:`Batch` for a model of input side ``size`` (``read``
    decodes one file, :func:`read_image` by default)."""
    from camlens.app.session import resize_unit

    begin = time.perf_counter()
    batch = Batch([], [], None)
    units = []
    for path in paths:
        try:
            image = read(path)
        except ValueError as error:
            batch.failures.append(Failure(str(path), str(error)))
            continue
        batch.paths.append(path)
        batch.images.append(image)
        units.append(resize_unit(image, size))
    batch.unit = torch.stack(units) if units else None
    batch.load_s = time.perf_counter() - begin
    return batch


def stream(
    files: Sequence[Path],
    batch_size: int,
    size: int,
    workers: int = 2,
    ahead: int = 2,
    read: Callable[[Sequence[Path], int], Batch] = decode,
) -> Iterator[Batch]:
    """Batches of ``files`` in order, decoded by ``workers`` threads at most ``ahead`` batches
    ahead of the consumer (memory stays flat however many files there are)."""
    chunks = [list(files[i : i + batch_size]) for i in range(0, len(files), batch_size)]
    if not chunks:
        return
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="camlens-decode")
    pending: queue.SimpleQueue = queue.SimpleQueue()
    try:
        for chunk in chunks[: ahead + 1]:
            pending.put(pool.submit(read, chunk, size))
        for index in range(len(chunks)):
            batch = pending.get().result()
            following = index + ahead + 1
            if following < len(chunks):
                pending.put(pool.submit(read, chunks[following], size))
            yield batch
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def folder_labels(files: Sequence[Path], roots: Sequence[str | os.PathLike]) -> dict[Path, str]:
    """The class of each file in an ImageFolder layout (``root/<class>/.../<image>``): the name
    of its first folder below the root it was found under (a folder given, or the fixed part of
    a glob such as ``val/*/*.jpg``). Files directly in a root, or given one by one, have none."""
    folders = []
    for root in roots:
        text = os.fspath(root)
        fixed = Path(text) if not any(c in text for c in "*?[") else _glob_root(text)
        if fixed.is_dir():
            folders.append(fixed.resolve())
    found: dict[Path, str] = {}
    for file in files:
        for root in folders:
            if root in file.parents:
                parts = file.relative_to(root).parts
                if len(parts) > 1:
                    found[file] = parts[0]
                break
    return found


def _glob_root(pattern: str) -> Path:
    """The folder a glob pattern searches: its parts before the first wildcard."""
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if any(c in p for c in "*?["))]]
    return Path(*fixed) if fixed else Path(".")


def class_indices(classes: Sequence[str], names: Sequence[str] | None) -> dict[str, int]:
    """Folder class names to the model's class indices: by the model's own class names where
    they match (case-insensitive), otherwise by ImageFolder's order (the sorted folder names,
    as ``camlens train`` and torchvision's ``ImageFolder`` number them)."""
    lookup = {name.lower(): i for i, name in reversed(list(enumerate(names or [])))}
    ordered = sorted(set(classes))
    if lookup and all(c.lower() in lookup for c in ordered):
        return {c: lookup[c.lower()] for c in ordered}
    return {c: i for i, c in enumerate(ordered)}
