"""``camlens evaluate`` below the command line: which images, which boxes, which metrics.

Images are fed as ``camlens explain`` feeds them (the session's whole-image resize and the
model's own preprocessing), and ground-truth boxes are mapped to the model's input the same way
(:func:`camlens.images.annotations.to_input_box`), so a box covers what the model saw of its object
on non-square images too. The metrics themselves are :mod:`camlens.metrics.report`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from camlens.datasets import read_boxes as read_demo_boxes
from camlens.errors import CamlensError, CamlensValueError
from camlens.images.annotations import BoxRecord, read_boxes, to_input_box
from camlens.images.decode import image_files, read_image
from camlens.metrics import report
from camlens.metrics.sanity import plot_sanity, sanity_check
from camlens.models.checkpoint import demo_path
from camlens.runs.session import Session

#: A batch for :func:`camlens.metrics.report.evaluate`: inputs, boxes per image, true labels.
EvalBatch = tuple[torch.Tensor, list[list[tuple[int, int, int, int]]] | None, torch.Tensor | None]


def choose_metrics(text: str, have_boxes: bool) -> list[str]:
    """``--metrics``: "default", "all" or names; localisation metrics only with boxes."""
    if text == "default":
        names = list(report.DEFAULT)
    elif text == "all":
        names = list(report.METRICS)
    else:
        names = [n.strip().replace("-", "_") for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in report.METRICS]
        if unknown:
            raise CamlensValueError(
                f"unknown metric {unknown[0]!r} in --metrics; valid: default, all, "
                + ", ".join(report.METRICS)
            )
    if not have_boxes:
        names = [n for n in names if n not in report.LOCALISATION]
    return names


def folder_batches(
    session: Session,
    files: Sequence[Path],
    root: Path,
    records: dict[str, BoxRecord] | None,
    per_batch: int,
) -> list[EvalBatch]:
    """``(x, boxes, labels)`` batches of ``per_batch`` files: each whole image as the session's
    input, its boxes (looked up by path below ``root``, else by file name) in the input's
    pixels, its label (-1 when unknown)."""
    batches: list[EvalBatch] = []
    for start in range(0, len(files), per_batch):
        chunk = list(files[start : start + per_batch])
        images = []
        for path in chunk:
            try:
                images.append(read_image(path))
            except ValueError as error:
                raise CamlensValueError(f"--data: {path}: {error}") from error
        x = session.to_input(images)
        if records is None:
            batches.append((x, None, None))
            continue
        boxes: list[list[tuple[int, int, int, int]]] = []
        labels: list[int] = []
        for path, image in zip(chunk, images, strict=True):
            record = records.get(path.relative_to(root).as_posix()) or records.get(path.name)
            shown = (session.size, session.size)
            found = (record or {}).get("boxes", [])
            boxes.append([to_input_box(box, image.shape[:2], shown) for box in found])
            label = (record or {}).get("label")
            labels.append(-1 if label is None else label)
        batches.append((x, boxes, torch.tensor(labels)))
    return batches


def demo_records() -> tuple[list[Path], Path, dict[str, BoxRecord]]:
    """The bundled samples, their folder and their ground-truth boxes and labels."""
    root = demo_path() / "samples"
    paths, labels, boxes = read_demo_boxes(root / "boxes.csv")
    records: dict[str, BoxRecord] = {
        Path(p).relative_to(root).as_posix(): {"boxes": [tuple(b)], "label": int(c)}
        for p, b, c in zip(paths, boxes.tolist(), labels.tolist())
    }
    return list(paths), root, records


@dataclass
class Evaluation:
    """What ``camlens evaluate`` computed: per-method scores, the run's settings, the pictures
    written, and the methods the sanity check skipped (with why)."""

    results: list[Any]
    config: dict[str, Any]
    pictures: list[Path]
    skipped: list[str]


def evaluate(
    session: Session,
    out: Path,
    methods: Sequence[str],
    metrics: Sequence[str],
    settings: Any,
    data: Path | None = None,
    boxes: Path | None = None,
    per_batch: int = 8,
    limit: int | None = None,
    sanity: bool = False,
    advance: Callable[[], None] | None = None,
    total: Callable[[int], None] | None = None,
) -> Evaluation:
    """Score ``methods`` with ``metrics`` on the images of ``data`` (the bundled samples when
    None) and write ``metrics.csv``, ``metrics.json``, the curve plots and ``report.html``."""
    if data is not None:
        files, root = image_files(data)[:limit], data
        records = read_boxes(boxes) if boxes is not None else None
    else:
        files, root, records = demo_records()
        files = files[:limit]
    batches = folder_batches(session, files, root, records, per_batch)
    if total is not None:
        total(len(methods) * len(batches))
    results = report.evaluate(session.model, batches, list(methods), metrics, settings, advance)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model": session.spec,
        "data": str(data) if data is not None else "demo samples",
        "images": len(files),
        "metrics": list(metrics),
        "steps": settings.steps,
        "baseline": settings.baseline,
        "tolerance": settings.tolerance,
        "target": "pred" if settings.target is None else settings.target,
        "layer": settings.layer,
        "precision": settings.precision,
        "preprocess": session.prepare.name,
        "size": session.size,
    }
    report.write_csv(results, out / "metrics.csv")
    pictures = report.plot_curves(results, out)
    document: dict[str, Any] = {}
    skipped: list[str] = []
    if sanity:
        checks = []
        for name in methods:
            try:
                checks.append(
                    sanity_check(session.model, batches[0][0][:8], name, layer=settings.layer)
                )
            except CamlensError as error:
                skipped.append(f"sanity check skipped for {name}: {error}")
        if checks:
            pictures.append(plot_sanity(checks, out / "sanity.png"))
            document = {c.method: {"steps": c.steps, **c.curves()} for c in checks}
    report.write_json(results, out / "metrics.json", config)
    if document:
        saved = json.loads((out / "metrics.json").read_text())
        saved["sanity"] = document
        (out / "metrics.json").write_text(json.dumps(saved, indent=2))
    report.write_html(results, out / "report.html", pictures, config)
    return Evaluation(results, config, pictures, skipped)
