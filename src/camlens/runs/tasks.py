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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from camlens import targets
from camlens.backends.locks import model_lock
from camlens.errors import CamlensValueError
from camlens.explanation import Explanation
from camlens.images.decode import collect, stream
from camlens.runs.pipeline import (
    Hooks,
    Inputs,
    Job,
    Outcome,
    RunSettings,
    Summary,
    attempt,
    manifest,
    nothing,
    output_names,
    run,
)
from camlens.runs.records import Record, encode, map_png
from camlens.runs.row import Row, number
from camlens.runs.session import Session
from camlens.targets.detector import explain_detections
from camlens.visualize.render import draw_label, overlay
from camlens.visualize.tasks import detection_overlay, rescale_box

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
    exp: Explanation,
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
    chance = None if probability is None else number(probability)
    row = Row(
        path=str(path), stem=stem, width=width, height=height, method=method,
        layer=exp.layer, precision=exp.extra.get("precision"),
        predicted=label, predicted_name=name, probability=chance, target=label,
        target_name=name, target_probability=chance, score=number(score), boxes=boxes,
        map=f"maps/{stem}_{method}.png", overlay=f"overlays/{stem}_{method}.{fmt}",
        load_s=0.0, explain_s=round(timing[0], 4),
        render_s=round(time.perf_counter() - timing[1], 4),
    )  # fmt: skip
    assert row.map is not None and row.overlay is not None
    return Record(row.as_dict(), {row.map: map_png(heat), row.overlay: encode(picture, fmt)})


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
                    found.explanation,
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
                exp,
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


class TaskEngine:
    """``--task detect|segment`` on this machine, one image at a time (a detector's batch is its
    detections); folder labels are not used."""

    name = "local"
    started = staticmethod(nothing)

    def __init__(self, task: TaskSettings) -> None:
        self.task = task
        #: One image's records: (session, x, path, image, stem, settings) -> records.
        self.records: Callable[..., list[Record]] = (
            partial(detect_records, task=task) if task.task == "detect" else segment_records
        )

    def inputs(self, paths: Sequence[str | os.PathLike], out: Path, labels: bool) -> Inputs:
        return Inputs(*collect(paths, exclude=out))

    def batches(self, job: Job) -> Iterator[Outcome]:
        session, settings = job.session, job.settings
        stems = output_names(job.files)
        for batch in stream(job.todo, 1, session.size, settings.decoders):
            records: list[Record] | None = None
            failed = list(batch.failures)
            if batch.unit is not None:
                path, image = batch.paths[0], batch.images[0]
                x = session.native(batch.unit)
                records, failed_now = attempt(
                    job.out,
                    [path],
                    partial(self.records, session, x, path, image, stems[path], settings),
                )
                failed += failed_now
            yield Outcome(
                partial(list, records or []),
                failed,
                int(records is not None),
                len(batch.paths) + len(batch.failures),
            )


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
    """The tasks' run: explain every image under ``paths`` for ``task.task`` ("detect" or
    "segment") into the run folder ``out`` (:func:`camlens.runs.pipeline.run` with
    :class:`TaskEngine`)."""
    info = {**manifest(session, settings), "task": task.task}
    if task.task == "detect":
        info.update(threshold=task.threshold, limit=task.limit)
    hooks = Hooks(echo, advance, total, title)
    return run(TaskEngine(task), session, paths, out, settings, info, hooks)
