"""Paths in, decoded batches out: file collection, decoding ahead of the model, folder labels.

``collect`` expands files, folders (recursive, hidden files skipped) and globs; folders and globs
give their image files (by suffix) and count the others as ignored. ``read_image`` is the one
decoder of every reader (explain, evaluate, train, serve, ``load_images``, ``Run.image``): EXIF
orientation applied, an allow-list of raster formats Pillow decodes itself (never EPS, PDF or a
format that runs another program), a pixel limit read from the header before decoding, 16-bit
images without float copies, large JPEGs decoded reduced (``draft``) when only the model's side
is needed. ``stream`` decodes in background threads, a batch at a time and a few batches ahead
of the model, each image kept at its decoded size (for overlays) and resized whole to the model's
side (for the model). A file that cannot be decoded becomes a :class:`Failure` with its reason;
the stream goes on. ``class_indices`` matches class folders to the model's class names.
"""

from __future__ import annotations

import difflib
import glob
import io
import os
import queue
import re
import stat
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from camlens.errors import CamlensValueError
from camlens.images import gpu_jpeg
from camlens.images.labels import imagenet_classes, imagenet_wnids
from camlens.images.pixels import IMAGE_SUFFIXES, WARNING_FILTERS, pil_rgb, resize_unit

#: The Pillow formats :func:`read_image` decodes (those this Pillow has): raster formats it
#: decodes itself. EPS/PS/PDF (Ghostscript) and formats that need another program are refused.
FORMATS = (
    *("JPEG", "MPO", "PNG", "WEBP", "AVIF", "HEIF", "BMP", "DIB", "TIFF", "GIF", "PPM", "ICO"),
    *("CUR", "PCX", "QOI", "JPEG2000", "PSD", "SGI", "DDS", "TGA"),
)
#: Images with more pixels than this are refused from their header, before decoding.
MAX_PIXELS = 100_000_000
#: A JPEG whose shorter side is over this many times the model's side is decoded reduced
#: (Pillow's ``draft``: 1/2, 1/4 or 1/8) to at least twice the model's side.
DRAFT_RATIO = 4


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


class Collected(NamedTuple):
    """What :func:`collect` found: the files in order, the inputs that failed, and how many
    non-image files folders and globs held (left out, not failures)."""

    files: list[Path]
    failures: list[Failure]
    ignored: int


def collect(paths: Sequence[str | os.PathLike], exclude: Path | None = None) -> Collected:
    """Expand files, folders (recursive, hidden files skipped) and globs into files, in order.

    Folders and globs give their image files (by suffix,
    :data:`camlens.images.pixels.IMAGE_SUFFIXES`); their other files are counted in ``ignored``. A
    file named on its own is always taken. A path that does not exist, cannot be read (a failure
    with the reason, e.g. "permission denied"), a folder without images or a glob without a match
    is a failure. Files under ``exclude`` (the
    output folder) are left out.
    """
    files: list[Path] = []
    failures: list[Failure] = []
    seen: set[Path] = set()
    ignored: set[Path] = set()
    skip = exclude.resolve() if exclude is not None else None

    def add(found: Sequence[Path], into: list[Path] | set[Path]) -> None:
        for path in found:
            resolved = path.resolve()
            if skip is not None and skip in resolved.parents:
                continue
            if isinstance(into, set):
                into.add(resolved)
            elif resolved not in seen:
                seen.add(resolved)
                into.append(resolved)

    for item in paths:
        text = os.fspath(item)
        path = Path(text)
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            mode = None
        except OSError as error:
            failures.append(Failure(text, os_reason(error)))
            continue
        if mode is not None and stat.S_ISDIR(mode):
            images, others = scan_folder(path, failures)
            add(others, ignored)
            if not images:
                failures.append(Failure(text, "folder holds no image files"))
            add(images, files)
        elif mode is not None:
            add([path], files)
        elif any(c in text for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            images = [p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES]
            add([p for p in matches if p.suffix.lower() not in IMAGE_SUFFIXES], ignored)
            if not images:
                reason = "no image file matches" if matches else "no file matches"
                failures.append(Failure(text, f"{reason} this pattern"))
            add(images, files)
        else:
            failures.append(Failure(text, "no such file or folder"))
    return Collected(files, failures, len(ignored))


def scan_folder(folder: Path, failures: list[Failure]) -> tuple[list[Path], list[Path]]:
    """The image files and the other files below ``folder`` (sorted, hidden ones skipped); a
    folder that cannot be listed is added to ``failures`` with the reason."""
    images: list[Path] = []
    others: list[Path] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as listing:
                entries = list(listing)
        except OSError as error:
            failures.append(Failure(str(current), os_reason(error)))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                    continue
                if not entry.is_file():
                    continue
            except OSError as error:
                failures.append(Failure(entry.path, os_reason(error)))
                continue
            path = Path(entry.path)
            (images if path.suffix.lower() in IMAGE_SUFFIXES else others).append(path)
    return sorted(images), others


def os_reason(error: OSError) -> str:
    """A short reason for an operating-system error: "permission denied", "no such file"..."""
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, FileNotFoundError):
        return "no such file or folder"
    return f"cannot be read ({(error.strerror or str(error)).lower()})"


def image_files(folder: Path, argument: str = "--data") -> list[Path]:
    """The image files below ``folder`` (by suffix, sorted, hidden ones skipped); an error names
    what is missing or cannot be read."""
    if not folder.is_dir():
        raise CamlensValueError(f"{argument} {str(folder)!r} is not a folder of images")
    failures: list[Failure] = []
    files, _ = scan_folder(folder, failures)
    if failures:
        raise CamlensValueError(f"{argument}: {failures[0].path}: {failures[0].reason}")
    if not files:
        raise CamlensValueError(
            f"{argument} {str(folder)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return files


def read_image(
    source: Path | bytes, size: int | None = None, max_pixels: int | None = MAX_PIXELS
) -> np.ndarray:
    """Decode an image file (or its bytes) as uint8 RGB (H, W, 3), upright (EXIF orientation
    applied); raise ``ValueError`` with a short reason otherwise.

    Only the raster formats in :data:`FORMATS` are decoded; an image over ``max_pixels`` (None:
    Pillow's own limit only) is refused from its header. With ``size`` (the model's side), a
    JPEG whose shorter side is over :data:`DRAFT_RATIO` times ``size`` is decoded reduced by 2,
    4 or 8, to at least ``2 * size``: the array is then that size, not the file's.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    except OSError as error:
        raise ValueError(os_reason(error)) from error
    with handle:
        try:
            head = handle.read(64)
            handle.seek(0)
            if not head:
                raise ValueError("empty file (0 bytes)")
            with _no_bomb_warning(True):
                opened = Image.open(handle, formats=_formats())
        except UnidentifiedImageError as error:
            raise ValueError(_unknown(head)) from error
        except ImportError as error:  # ultralytics' patched Image.open looks for a HEIF plugin
            raise ValueError(
                f"not an image (Pillow cannot identify its format: {error})"
            ) from error
        except OSError as error:
            raise ValueError(_decode_reason(error)) from error
        except Image.DecompressionBombError as error:
            raise ValueError(_too_large(error)) from error
        with opened:
            width, height = opened.size
            if max_pixels is not None and width * height > max_pixels:
                raise ValueError(
                    f"too large: {width}x{height} = {width * height / 1e6:.1f} Mpx, over the "
                    f"limit of {max_pixels / 1e6:.1f} Mpx"
                )
            if (
                size
                and opened.format in ("JPEG", "MPO")
                and min(width, height) > DRAFT_RATIO * size
            ):
                opened.draft("RGB", (2 * size, 2 * size))
            try:
                with _no_bomb_warning(width * height > (Image.MAX_IMAGE_PIXELS or width * height)):
                    opened.load()
                ImageOps.exif_transpose(opened, in_place=True)
                return pil_rgb(opened)
            except Image.DecompressionBombError as error:
                raise ValueError(_too_large(error)) from error
            except (OSError, SyntaxError, ValueError, EOFError, IndexError) as error:
                raise ValueError(_decode_reason(error)) from error


def _formats() -> list[str]:
    from PIL import Image

    Image.init()
    return [name for name in FORMATS if name in Image.OPEN]


def _unknown(head: bytes) -> str:
    """Why a file Pillow could not open among :data:`FORMATS` is refused: a format it knows but
    camlens does not read (EPS...), or none."""
    from PIL import Image

    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
        return "not a supported image format (HEIF: install pillow-heif to read it)"
    for name, (_, accept) in Image.OPEN.items():
        try:
            known = name not in FORMATS and accept is not None and bool(accept(head))
        except Exception:  # noqa: BLE001  (a plugin's check on a short prefix)
            known = False
        if known:
            return f"not a supported image format ({name})"
    return "not an image (Pillow cannot identify its format)"


def _decode_reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.errno is not None:
        return os_reason(error)  # the file system's error, not the image's
    return f"corrupt or truncated image ({error})"


def _too_large(error: Exception) -> str:
    numbers = re.findall(r"\d+", str(error))
    if len(numbers) < 2:
        return f"too large ({error})"
    return f"too large: {numbers[0]} pixels, over Pillow's limit of {numbers[1]}"


@contextmanager
def _no_bomb_warning(active: bool) -> Iterator[None]:
    """Pillow's DecompressionBombWarning silenced (camlens checks ``max_pixels`` itself); the
    warning filters are process-wide, so one thread at a time changes them."""
    if not active:
        yield
        return
    from PIL import Image

    with WARNING_FILTERS, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def decode(
    paths: Sequence[Path],
    size: int,
    read: Callable[..., np.ndarray] = read_image,
    device: torch.device | None = None,
) -> Batch:
    """Decode ``paths`` into one :class:`Batch` for a model of input side ``size`` (``read(path,
    size)`` decodes one file, :func:`read_image` by default) on ``device`` (None: the CPU). On a
    CUDA device, plain JPEGs are decoded there (:mod:`camlens.images.gpu_jpeg`)."""
    begin = time.perf_counter()
    batch = Batch([], [], None)
    units = []
    on_gpu = gpu_jpeg.decode_jpegs(paths, size, device, MAX_PIXELS, DRAFT_RATIO) if device else {}
    for path in paths:
        try:
            image, unit = on_gpu.get(path) or _on_cpu(read, path, size)
        except ValueError as error:
            batch.failures.append(Failure(str(path), str(error)))
            continue
        batch.paths.append(path)
        batch.images.append(image)
        units.append(unit)
    batch.unit = gpu_jpeg.stack_units(units, device) if units else None
    batch.load_s = time.perf_counter() - begin
    return batch


def _on_cpu(read: Callable[..., np.ndarray], path: Path, size: int) -> tuple[Any, torch.Tensor]:
    image = read(path, size)
    return image, resize_unit(image, size)


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


def class_key(name: str) -> str:
    """A class or folder name compared case- and separator-insensitively: ``golden_retriever``,
    ``Golden-Retriever`` and ``golden retriever`` are one key."""
    return " ".join(re.split(r"[\s_\-.]+", name.strip().lower())).strip()


def class_indices(
    folders: Sequence[str],
    names: Sequence[str] | None,
    classes: int,
    class_map: Mapping[str, str | int] | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """The model's class index of each class folder name.

    A folder is what ``class_map`` (folder -> class name or index) says, else the class whose
    name matches it (:func:`class_key`). A folder that matches none is an error listing it with
    the closest class names. A model without class ``names`` takes the folders in sorted order
    only when there are as many as its ``classes`` (and ``echo`` says so); otherwise an error.
    """
    wanted = sorted(set(folders))
    if not wanted:
        return {}
    lookup: dict[str, int] = {}
    for index, name in enumerate(names or []):
        lookup.setdefault(class_key(name), index)
    if names and tuple(names) == imagenet_classes():  # ImageNet's own folders: n01440764/...
        for index, wnid in enumerate(imagenet_wnids()):
            lookup.setdefault(wnid, index)
    mapped = {class_key(k): v for k, v in (class_map or {}).items()}
    found: dict[str, int] = {}
    for folder in wanted:
        if class_key(folder) in mapped:
            found[folder] = _mapped_index(folder, mapped[class_key(folder)], lookup, classes)
        elif class_key(folder) in lookup:
            found[folder] = lookup[class_key(folder)]
    missing = [f for f in wanted if f not in found]
    if not missing:
        return found
    if names:
        keys = list(lookup)
        by_key = {class_key(n): n for n in reversed(list(names))}

        def closest(folder: str) -> str:
            near = difflib.get_close_matches(class_key(folder), keys, n=3, cutoff=0.6)
            return f" (closest: {', '.join(repr(by_key[k]) for k in near)})" if near else ""

        listed = ", ".join(f"{f!r}{closest(f)}" for f in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise CamlensValueError(
            f"--labels-from-folders: {len(missing)} class folder(s) match no class name of the "
            f"model: {listed}{more}; rename them, leave them out, or pass --class-map FILE "
            "(folder -> class name or index)"
        )
    if not found and len(wanted) == classes:
        if echo is not None:
            echo(
                f"note: the model has no class names: the {len(wanted)} class folders are taken "
                f"in sorted order as classes 0..{len(wanted) - 1} ({', '.join(wanted)}); pass "
                "--labels FILE or --class-map FILE to say otherwise"
            )
        return {f: i for i, f in enumerate(wanted)}
    raise CamlensValueError(
        f"--labels-from-folders: {len(wanted)} class folders but the model has {classes} classes "
        "and no class names; pass --labels FILE (its class names) or --class-map FILE "
        "(folder -> class index)"
    )


def _mapped_index(folder: str, value: str | int, lookup: dict[str, int], classes: int) -> int:
    """A ``--class-map`` entry's class index: an index, or a class name of the model."""
    if isinstance(value, str) and class_key(value) in lookup:
        return lookup[class_key(value)]
    if isinstance(value, int) or value.strip().isdigit():
        index = int(value)
        if 0 <= index < classes:
            return index
        raise CamlensValueError(
            f"--class-map: {folder!r} -> {index} is out of range: the model has {classes} "
            f"classes (0..{classes - 1})"
        )
    raise CamlensValueError(
        f"--class-map: {folder!r} -> {value!r} is no class name of the model"
        + ("" if lookup else " (it has none: give class indices or pass --labels FILE)")
    )


def require_labels(labels: Mapping[Any, str], target: object) -> None:
    """``--target label`` needs at least one input in a class folder."""
    if target == "label" and not labels:
        raise CamlensValueError(
            "--target label: no input is in a class folder (ROOT/<class>/<image>); give the "
            "folder above the class folders, or another --target"
        )
