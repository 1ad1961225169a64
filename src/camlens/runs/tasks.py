"""``camlens explain --task detect|segment``: detectors and segmentation models into a run folder.

The classify task is :func:`camlens.runs.local.explain_files`. Here the same inputs, stems,
manifest and :class:`~camlens.runs.writer.RunWriter` serve two other tasks, one batch at a time:

- ``detect``: every detection scoring at least ``threshold`` gets its own map
  (:func:`camlens.explain_detections`) and its own row (``stem`` ``<image>_<n>``, ``predicted``
  the detection's label, ``probability`` its score, ``boxes`` its box in the image's pixels) and
  overlay: its box and label drawn over its map.
- ``segment``: the target class's region score (:func:`camlens.targets.segmentation` over the
  pixels predicted as that class); the target is a class or, by default, the class covering the
  most pixels of each image.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from camlens.backends.locks import model_lock
from camlens.errors import CamlensValueError
from camlens.images.decode import collect, stream
from camlens.runs.local import (
    EXPLAIN_ERRORS,
    RunSettings,
    Summary,
    failed_batch,
    log_failure,
    manifest,
    output_names,
    to_do,
)
from camlens.runs.records import Record, _encode, _number, map_png
from camlens.runs.session import Session
from camlens.runs.writer import RunWriter

TASKS = ("classify", "detect", "segment")


@dataclass
class TaskSettings:
    """The task and its own options: the detections' score threshold and how many per image."""

    task: str = "detect"
    threshold: float = 0.5
    limit: int = 20


def preprocess_for(task: str, preprocess: str) -> str:
    """``--preprocess auto`` for a task: torchvision's detectors normalise inside the model, so
    they take [0, 1] images ("unit")."""
    if task not in TASKS:
        raise CamlensValueError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    return "unit" if task == "detect" and preprocess == "auto" else preprocess


def _record(
    session: Session,
    where: tuple[Path, np.ndarray, str],
    method: str,
    layer: str,
    label: int,
    probability: float | None,
    score: float,
    heat: np.ndarray,
    picture: np.ndarray,
    boxes: list[list[int]],
    timing: tuple[float, float],
    fmt: str,
) -> Record:
    """The row of one map (``where`` = source path, image, stem) and its map and overlay files;
    ``timing`` = (explain seconds, render start)."""
    path, image, stem = where
    height, width = image.shape[:2]
    name = session.name(label)
    chance = None if probability is None else _number(probability)
    row = {
        "path": str(path),
        "stem": stem,
        "width": width,
        "height": height,
        "method": method,
        "layer": layer,
        "predicted": label,
        "predicted_name": name,
        "probability": chance,
        "target": label,
        "target_name": name,
        "target_probability": chance,
        "score": _number(score),
        "true_label": None,
        "true_name": None,
        "correct": None,
        "boxes": boxes,
        "map": f"maps/{stem}_{method}.png",
        "overlay": f"overlays/{stem}_{method}.{fmt}",
        "panel": None,
        "image": None,
        "load_s": 0.0,
        "explain_s": round(timing[0], 4),
        "render_s": round(time.perf_counter() - timing[1], 4),
        "error": None,
    }
    return Record(row, {row["map"]: map_png(heat), row["overlay"]: _encode(picture, fmt)})


def detect_records(
    session: Session,
    x: torch.Tensor,
    path: Path,
    image: np.ndarray,
    stem: str,
    settings: RunSettings,
    task: TaskSettings,
) -> list[Record]:
    """One image through the detector: a row, a map and an overlay per method and detection."""
    from camlens.targets.detector import explain_detections
    from camlens.visualize.tasks import detection_overlay, rescale_box

    options = settings.render
    fmt = options.overlay_format
    records = []
    for method in settings.methods:
        begin = time.perf_counter()
        found = explain_detections(
            session.adapter, x, method, threshold=task.threshold, limit=task.limit,
            layer=settings.layer,
        )  # fmt: skip
        seconds = (time.perf_counter() - begin) / max(len(found), 1)
        for n, heat in enumerate(found.explanation.maps.numpy()):
            begin = time.perf_counter()
            label, score = int(found.labels[n]), float(found.scores[n])
            box = rescale_box(tuple(found.boxes[n].tolist()), heat.shape, image.shape[:2])
            text = f"{session.name(label)} {score:.2f}"
            picture = detection_overlay(image, heat, box, text, options.colormap, options.alpha)
            records.append(
                _record(
                    session,
                    (path, image, f"{stem}_{n}"),
                    method,
                    found.explanation.layer,
                    label,
                    score,
                    float(found.explanation.scores[n]),
                    heat,
                    picture,
                    [[round(v) for v in box]],
                    (seconds, begin),
                    fmt,
                )  # fmt: skip
            )
    return records


def segment_records(
    session: Session,
    x: torch.Tensor,
    path: Path,
    image: np.ndarray,
    stem: str,
    settings: RunSettings,
) -> list[Record]:
    """One image through the segmentation model: the target class's region, per method."""
    from camlens import targets
    from camlens.visualize.render import draw_label, overlay

    options = settings.render
    fmt = options.overlay_format
    category = settings.target
    if category is None:  # the class covering the most pixels
        with model_lock(session.adapter.model):
            output = session.adapter.outputs(x)
        logits = targets.dense_logits(output)
        if logits.shape[1] == 1:
            category = int((logits[0, 0] > 0).float().mean() >= 0.5)
        else:
            category = int(logits[0].argmax(dim=0).flatten().mode().values)
    if not isinstance(category, int):
        raise CamlensValueError(f"--task segment takes --target pred or a class, got {category!r}")
    records = []
    for method in settings.methods:
        begin = time.perf_counter()
        target = targets.segmentation(category)
        exp = session.explainer(method, settings.layer, settings.precision)(x, target=target)
        explained = time.perf_counter() - begin
        begin = time.perf_counter()
        heat = exp.maps[0].numpy()
        picture = overlay(image, heat, options.colormap, options.alpha, options.threshold)
        picture = draw_label(picture, session.name(category))
        records.append(
            _record(
                session,
                (path, image, stem),
                method,
                exp.layer,
                category,
                None,
                float(exp.scores[0]),
                heat,
                picture,
                [],
                (explained, begin),
                fmt,
            )  # fmt: skip
        )
    return records


def explain_task_files(
    session: Session,
    paths: Sequence[str | os.PathLike],
    out: Path,
    settings: RunSettings,
    task: TaskSettings,
    *,
    echo: Callable[[str], None] = print,
    advance: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
    title: str = "camlens report",
) -> Summary:
    """Explain every image under ``paths`` for ``task.task`` ("detect" or "segment") into the run
    folder ``out``, one image at a time (a detector's batch is its detections)."""
    started = time.perf_counter()
    out = Path(out)
    files, failures, ignored = collect(paths, exclude=out)
    summary = Summary(failures=list(failures), ignored=ignored)
    info = {**manifest(session, settings), "task": task.task}
    if task.task == "detect":
        info.update(threshold=task.threshold, limit=task.limit)
    stems = output_names(files)
    writer = RunWriter(out, info, settings.resume, settings.overwrite)
    complete = False
    try:
        todo = to_do(files, writer, settings.methods, summary, echo, total)
        writer.write([], summary.failures)
        for batch in stream(todo, 1, session.size, settings.decoders):
            failed = list(batch.failures)
            records: list[Record] = []
            if batch.unit is not None:
                path, image = batch.paths[0], batch.images[0]
                x = session.native(batch.unit)
                try:
                    if task.task == "detect":
                        records = detect_records(
                            session, x, path, image, stems[path], settings, task
                        )
                    else:
                        records = segment_records(session, x, path, image, stems[path], settings)
                    summary.done += 1
                except EXPLAIN_ERRORS as error:
                    failed += failed_batch([path], error)
                    log_failure(out, [path])
            for failure in failed:
                echo(f"failed: {failure.path}: {failure.reason}")
            summary.failures += failed
            writer.write(records, failed)
            if advance is not None:
                advance(len(batch.paths) + len(batch.failures))
        complete = True
    finally:
        summary.rows = writer.finish(title, complete=complete)
        summary.seconds = time.perf_counter() - started
    return summary
