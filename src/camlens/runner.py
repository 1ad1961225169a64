"""The batch job behind ``camlens explain``: files in, overlays, results and a report out.

Paths (files, folders searched recursively, globs) are read in a background thread, a batch at a
time; each batch is explained with every method, each image rendered and its results appended to
``results.jsonl`` (one line per image and method) as soon as it is done, so an interrupted run
loses nothing and ``resume=True`` skips what is already there. A file that cannot be read is
reported with its reason and skipped. ``results.csv`` and ``report.html`` are rewritten at the end,
also after an interruption.

The model sees the whole image resized to ``size`` x ``size`` (as the CAM and Grad-CAM tutorials
do), so the map covers every pixel, overlays are drawn on the image at its original resolution and
boxes are in its pixel coordinates.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from camlens.io import IMAGENET_MEAN, IMAGENET_STD

RESULTS = "results.jsonl"
CSV_FIELDS = (
    "path", "method", "layer", "predicted", "predicted_name", "probability", "target",
    "target_name", "target_probability", "score", "boxes", "overlay", "panel", "image",
    "load_s", "explain_s", "render_s",
)  # fmt: skip


@dataclass
class Options:
    """What ``run`` does; the command line fills it from its flags."""

    methods: list[str]
    target: int | None = None
    layer: str = "auto"
    colormap: str = "jet"
    alpha: float = 0.5
    threshold: float | None = None
    boxes: bool = False
    box_threshold: float = 0.2
    contours: tuple[float, ...] = ()
    batch_size: int = 8
    size: int = 224
    normalize: bool = True
    device: str = "cpu"
    panel: bool = True
    resume: bool = False
    precision: str = "auto"  # Score-CAM's masked forwards: auto, fp32, bf16 or int8


@dataclass
class Failure:
    """An input that was skipped, and why."""

    path: str
    reason: str


@dataclass
class Summary:
    """What a run did: images explained now, skipped as already done, and failures."""

    done: int = 0
    resumed: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def collect(paths: Sequence[str | os.PathLike], exclude: Path | None = None):
    """Expand files, folders (recursive, hidden files skipped) and globs into files, in order.

    Returns ``(files, failures)``; a path that does not exist or a glob without a match is a
    failure. Files under ``exclude`` (the output folder) are left out.
    """
    files: list[Path] = []
    failures: list[Failure] = []
    skip = exclude.resolve() if exclude is not None else None

    def add(path: Path) -> None:
        resolved = path.resolve()
        if skip is not None and skip in resolved.parents:
            return
        if resolved not in seen:
            seen.add(resolved)
            files.append(resolved)

    seen: set[Path] = set()
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


def read_image(path: Path) -> np.ndarray:
    """Decode an image file as uint8 RGB; raise ``ValueError`` with a short reason otherwise."""
    from PIL import Image, UnidentifiedImageError

    from camlens.io import to_rgb

    try:
        size = path.stat().st_size
    except OSError as error:
        raise ValueError(f"cannot be read ({error.strerror})") from error
    if size == 0:
        raise ValueError("empty file (0 bytes)")
    try:
        with Image.open(path) as opened:
            opened.load()
            return np.array(to_rgb(opened))
    except UnidentifiedImageError as error:
        raise ValueError("not an image (Pillow cannot identify its format)") from error
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"corrupt or truncated image ({error})") from error


def to_batch(images: list[np.ndarray], size: int, normalize: bool = True) -> torch.Tensor:
    """Whole images resized to (size, size), float32 (B, 3, size, size) in [0, 1], then
    ImageNet-normalised unless ``normalize`` is False (models that normalise their own input,
    like a camlens ``Classifier``)."""
    batch = []
    for image in images:
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        tensor = F.interpolate(
            tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        batch.append(tensor[0].clamp(0, 1))
    x = torch.stack(batch)
    if not normalize:
        return x
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


@dataclass
class Batch:
    paths: list[Path]
    images: list[np.ndarray]
    x: torch.Tensor | None
    failures: list[Failure]
    load_s: float


def batches(
    files: list[Path], batch_size: int, size: int, normalize: bool = True
) -> Iterator[Batch]:
    """Read ``files`` in a background thread, ``batch_size`` at a time (two batches ahead)."""
    ahead: queue.Queue[Batch | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def work() -> None:
        try:
            for start in range(0, len(files), batch_size):
                begin = time.perf_counter()
                paths, images, failures = [], [], []
                for path in files[start : start + batch_size]:
                    try:
                        images.append(read_image(path))
                        paths.append(path)
                    except ValueError as error:
                        failures.append(Failure(str(path), str(error)))
                x = to_batch(images, size, normalize) if images else None
                item = Batch(paths, images, x, failures, time.perf_counter() - begin)
                while not stop.is_set():
                    try:
                        ahead.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ahead.put(None)
        except BaseException as error:  # handed to the consumer, re-raised there
            ahead.put(error)

    thread = threading.Thread(target=work, name="camlens-loader", daemon=True)
    thread.start()
    try:
        while True:
            item = ahead.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def output_names(files: list[Path]) -> dict[Path, str]:
    """A file-name stem per input: its own stem, or its path below the common folder when two
    inputs share a stem."""
    stems: dict[str, int] = {}
    for path in files:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    root = Path(os.path.commonpath([p.parent for p in files])) if files else Path()
    names = {}
    for path in files:
        if stems[path.stem] == 1:
            names[path] = _safe(path.stem)
        else:
            names[path] = _safe("__".join(path.relative_to(root).parts))
    return names


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name) or "image"


def read_results(out: Path) -> list[dict[str, Any]]:
    """The records of ``results.jsonl`` (a truncated last line, from a killed run, is dropped)."""
    file = out / RESULTS
    if not file.is_file():
        return []
    records = []
    for line in file.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def write_csv(out: Path, records: list[dict[str, Any]]) -> None:
    """``results.csv``: the records of ``results.jsonl``, one row per image and method."""
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            row = dict(record)
            row["boxes"] = json.dumps(record.get("boxes", []))
            for key, value in record.get("seconds", {}).items():
                row[f"{key}_s"] = value
            writer.writerow(row)


def run(
    model: Any,
    paths: Sequence[str | os.PathLike],
    out: Path,
    options: Options,
    names: list[str] | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    layout: Callable[[torch.Tensor], Any] | None = None,
    title: str = "camlens report",
    on_explained: Callable[[list[Path], Any], None] | None = None,
) -> Summary:
    """Explain every image under ``paths`` with ``model``; write everything into ``out``.

    ``layout`` turns each (B, 3, H, W) batch into what the model takes (channels-last for Keras).
    ``on_explained(paths, explanation)`` is called for every batch and method (``camlens demo``
    scores the maps with it).
    """
    import camlens
    from camlens.backends import adapter_for
    from camlens.registry import get as get_method
    from camlens.registry import options_for
    from camlens.report import write_report

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for folder in ("overlays", "images", "panels"):
        (out / folder).mkdir(exist_ok=True)
    files, failures = collect(paths, exclude=out)
    summary = Summary(failures=list(failures))
    for failure in failures:
        echo(f"failed: {failure.path}: {failure.reason}")
    wanted = set(options.methods)
    previous = read_results(out) if options.resume else []
    if not options.resume and (out / RESULTS).exists():
        (out / RESULTS).unlink()
    done_methods: dict[str, set[str]] = {}
    for record in previous:
        done_methods.setdefault(record.get("path", ""), set()).add(record.get("method", ""))
    todo = [f for f in files if not wanted <= done_methods.get(str(f), set())]
    summary.resumed = len(files) - len(todo)
    if summary.resumed:
        echo(f"resume: {summary.resumed} image(s) already in {RESULTS}, {len(todo)} to do")
    stems = output_names(files)
    adapter = adapter_for(model)
    # one explainer per method for the whole run, sharing the adapter's cached layer survey
    explainers = {
        m: get_method(m)(
            adapter,
            layer=options.layer,
            **options_for(m, precision=options.precision),
        )
        for m in options.methods
    }
    bar, task = _progress(len(todo)) if progress else (None, None)
    try:
        if bar is not None:
            bar.start()
        for batch in batches(todo, options.batch_size, options.size, options.normalize):
            for failure in batch.failures:
                summary.failures.append(failure)
                echo(f"failed: {failure.path}: {failure.reason}")
            if batch.x is not None:
                try:
                    x = batch.x if layout is None else layout(batch.x)
                    summary.done += _explain_batch(
                        explainers, adapter, x, batch, out, options, names, stems, on_explained
                    )
                except (camlens.CamlensError, RuntimeError) as error:
                    for path in batch.paths:
                        summary.failures.append(Failure(str(path), f"explaining failed: {error}"))
                        echo(f"failed: {path}: explaining failed: {error}")
            if bar is not None:
                bar.update(task, advance=len(batch.paths) + len(batch.failures))
    finally:
        if bar is not None:
            bar.stop()
        records = read_results(out)
        write_csv(out, records)
        write_report(out, records, summary.failures, title)
        summary.seconds = time.perf_counter() - started
    return summary


def _progress(total: int):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Speed(ProgressColumn):
        def render(self, task: Any) -> Text:
            elapsed = task.finished_time or task.elapsed
            if not elapsed or not task.completed:
                return Text("")
            return Text(f"{task.completed / elapsed:.2f} images/s")

    bar = Progress(
        TextColumn("explaining"),
        BarColumn(),
        MofNCompleteColumn(),
        Speed(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    return bar, bar.add_task("explaining", total=total)


def _explain_batch(
    explainers, adapter, x, batch, out, options, names, stems, on_explained=None
) -> int:
    """Explain, render and record one batch; returns the number of images finished."""
    from PIL import Image

    from camlens.boxes import boxes as find_boxes
    from camlens.labels import class_name
    from camlens.render import (
        draw_boxes,
        draw_contours,
        draw_label,
        label_text,
        overlay,
        panel,
    )

    count = len(batch.paths)
    explained = []
    for method in options.methods:
        begin = time.perf_counter()
        exp = explainers[method](x, target=options.target)
        explained.append((exp, (time.perf_counter() - begin) / count))
        if on_explained is not None:
            on_explained(batch.paths, exp)
    if options.target is None:
        predicted, probability = explained[0][0].targets, explained[0][0].probs
    else:
        with torch.no_grad():
            logits = adapter.logits(x).float()
        if logits.shape[1] == 1:
            predicted = (logits[:, 0] > 0).long().cpu()
            probability = torch.sigmoid(logits[:, 0].abs()).cpu()
        else:
            probability, predicted = logits.softmax(dim=1).max(dim=1)
            probability, predicted = probability.cpu(), predicted.cpu()
    for i, (path, image) in enumerate(zip(batch.paths, batch.images)):
        stem = stems[path]
        height, width = image.shape[:2]
        Image.fromarray(image).save(out / "images" / f"{stem}.jpg", quality=90)
        rows, lines = [], []
        for exp, seconds in explained:
            begin = time.perf_counter()
            heat = exp.maps[i]
            target = int(exp.targets[i])
            prob = float(exp.probs[i])
            picture = overlay(image, heat, options.colormap, options.alpha, options.threshold)
            found = (
                cast(list, find_boxes(heat, options.box_threshold, size=(height, width)))
                if options.boxes
                else []
            )
            if found:
                picture = draw_boxes(picture, found)
            if options.contours:
                picture = draw_contours(picture, heat, options.contours)
            picture = draw_label(picture, label_text(class_name(names, target), prob))
            file = f"overlays/{stem}_{exp.method}.png"
            Image.fromarray(picture).save(out / file)
            rows.append((exp.method, heat, picture))
            lines.append(
                {
                    "path": str(path),
                    "image": f"images/{stem}.jpg",
                    "width": width,
                    "height": height,
                    "method": exp.method,
                    "layer": exp.layer,
                    "predicted": int(predicted[i]),
                    "predicted_name": class_name(names, int(predicted[i])),
                    "probability": round(float(probability[i]), 6),
                    "target": target,
                    "target_name": class_name(names, target),
                    "target_probability": None if prob != prob else round(prob, 6),
                    "score": round(float(exp.scores[i]), 6),
                    "boxes": [list(b) for b in found],
                    "overlay": file,
                    "panel": None,
                    "seconds": {
                        "load": round(batch.load_s / count, 4),
                        "explain": round(seconds, 4),
                        "render": round(time.perf_counter() - begin, 4),
                    },
                }
            )
        if options.panel:
            best = label_text(class_name(names, int(predicted[i])), float(probability[i]))
            title = f"{path.name}: {best}"
            panel(image, rows, out / "panels" / f"{stem}.png", title, options.colormap)
            for line in lines:
                line["panel"] = f"panels/{stem}.png"
        with open(out / RESULTS, "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(line) + "\n" for line in lines))
            handle.flush()
    return count
