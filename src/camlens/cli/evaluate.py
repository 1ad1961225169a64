"""``camlens evaluate``: faithfulness and localisation tables for methods on a folder of images.

Boxes come from a CSV (``path,x0,y0,x1,y1[,label]``, pixels of the original image, both corners
inside the box, several rows per image allowed) or Pascal VOC XML (a file or a folder of them;
VOC's 1-based pixel coordinates are shifted to 0-based). They are mapped through the same
resize and centre crop as the images.
"""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import typer

from camlens.cli import app
from camlens.errors import CamlensError, CamlensValueError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
BoxRecord = dict[str, Any]  # {"boxes": [(x0, y0, x1, y1)], "label": int | None}


def read_boxes(path: Path) -> dict[str, BoxRecord]:
    """Boxes per image name from a CSV file, a VOC XML file or a folder of VOC XML files."""
    if path.is_dir():
        records: dict[str, BoxRecord] = {}
        for file in sorted(path.glob("*.xml")):
            records.update(_read_voc(file))
        return records
    if not path.is_file():
        raise CamlensValueError(f"--boxes {str(path)!r} is neither a file nor a folder")
    if path.suffix.lower() == ".xml":
        return _read_voc(path)
    return _read_csv(path)


def _read_csv(path: Path) -> dict[str, BoxRecord]:
    records: dict[str, BoxRecord] = {}
    with open(path, newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].startswith("#"):
                continue
            if number == 1 and not _is_number(row[1] if len(row) > 1 else ""):
                continue  # a header
            if len(row) < 5:
                raise CamlensValueError(
                    f"{path}:{number}: expected path,x0,y0,x1,y1[,label], got {','.join(row)}"
                )
            try:
                box = tuple(int(round(float(v))) for v in row[1:5])
                label = int(row[5]) if len(row) > 5 and row[5].strip() else None
            except ValueError as error:
                raise CamlensValueError(
                    f"{path}:{number}: box coordinates and label must be numbers, got "
                    f"{','.join(row)}"
                ) from error
            record = records.setdefault(row[0].strip(), {"boxes": [], "label": label})
            record["boxes"].append(box)
    return records


def _read_voc(path: Path) -> dict[str, BoxRecord]:
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise CamlensValueError(f"{path} is not a Pascal VOC XML file: {error}") from error
    name = root.findtext("filename") or path.with_suffix(".jpg").name
    boxes = []
    for item in root.iter("object"):
        corners = item.find("bndbox")
        if corners is None:
            continue
        values = [float(corners.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")]
        if any(math.isnan(v) for v in values):
            raise CamlensValueError(f"{path}: a bndbox lacks xmin, ymin, xmax or ymax")
        boxes.append(tuple(int(round(v)) - 1 for v in values))
    return {name.strip(): {"boxes": boxes, "label": None}}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def find_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise CamlensValueError(f"--data {str(folder)!r} is not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CamlensValueError(
            f"--data {str(folder)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return files


def to_input_box(
    box: tuple[int, int, int, int], original: tuple[int, int], out: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A box in the original image's pixels (height, width = ``original``) in the pixels of the
    model's input (H, W) = ``out``, the whole image resized to it: every pixel the box touches."""
    height, width = original
    sy, sx = out[0] / height, out[1] / width
    x0, y0 = max(math.floor(box[0] * sx), 0), max(math.floor(box[1] * sy), 0)
    x1 = min(math.ceil((box[2] + 1) * sx) - 1, out[1] - 1)
    y1 = min(math.ceil((box[3] + 1) * sy) - 1, out[0] - 1)
    return x0, y0, x1, y1


def folder_batches(
    paths: list[Path],
    root: Path,
    records: dict[str, BoxRecord] | None,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    size: int,
    per_batch: int,
) -> Iterator[tuple[torch.Tensor, Any, Any]]:
    """(x, boxes, labels) batches of ``per_batch`` images from files: each whole image resized to
    ``size`` x ``size`` in [0, 1], then ``prepare``d into the model's input."""
    import numpy as np

    import camlens
    from camlens.io import to_rgb

    for start in range(0, len(paths), per_batch):
        chunk = paths[start : start + per_batch]
        # writable copies: torch warns on read-only arrays (PIL's are)
        arrays = [np.array(to_rgb(path)) for path in chunk]
        unit, _ = camlens.load_images(arrays, preset="unit", size=size)
        x = prepare(unit)
        if records is None:
            yield x, None, None
            continue
        boxes: list[list[tuple[int, int, int, int]]] = []
        labels: list[int] = []
        for path, array in zip(chunk, arrays, strict=True):
            record = records.get(path.relative_to(root).as_posix()) or records.get(path.name)
            original = array.shape[:2]
            out = (x.shape[-2], x.shape[-1])
            boxes.append(
                [to_input_box(box, original, out) for box in (record or {}).get("boxes", [])]
            )
            label = (record or {}).get("label")
            labels.append(-1 if label is None else label)
        yield x, boxes, torch.tensor(labels)


def demo_samples(per_batch: int) -> list[tuple[torch.Tensor, Any, Any]]:
    """Batches of the 16 bundled cluttered-digit samples: [0, 1] images (the demo model
    normalises its own input), their ground-truth boxes and labels."""
    import camlens
    from camlens.checkpoint import demo_path
    from camlens.datasets import read_boxes

    paths, labels, boxes = read_boxes(demo_path() / "samples" / "boxes.csv")
    x, _ = camlens.load_images(paths, preset="unit")
    groups = [[tuple(box)] for box in boxes.tolist()]
    return [
        (
            x[start : start + per_batch],
            groups[start : start + per_batch],
            labels[start : start + per_batch],
        )
        for start in range(0, x.shape[0], per_batch)
    ]


def load_model(spec: str, weights: str) -> Any:
    from camlens.models import load_spec

    return load_spec(spec, None if weights == "none" else weights)


def choose_metrics(text: str, have_boxes: bool) -> list[str]:
    from camlens.metrics import report

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


@app.command()
def evaluate(
    model: str = typer.Option(..., "--model", help="Model spec (torchvision:resnet18, demo...)."),
    data: Path | None = typer.Option(None, "--data", help="Folder of images (searched deeply)."),
    boxes: Path | None = typer.Option(
        None, "--boxes", help="Boxes: a CSV path,x0,y0,x1,y1[,label] or Pascal VOC XML (folder)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for metrics.csv/json, PNGs, report."),
    method: str = typer.Option("all", "--method", help="'all' or method names, comma-separated."),
    metrics_: str = typer.Option(
        "default",
        "--metrics",
        help="'default' (deletion, insertion, average_drop, increase and, with boxes, the "
        "localisation metrics), 'all' (adds road_morf, road_lerf) or names, comma-separated.",
    ),
    weights: str = typer.Option("DEFAULT", "--weights", help="DEFAULT, none or a .pth file."),
    steps: int = typer.Option(50, "--steps", help="Deletion/insertion steps."),
    baseline: str = typer.Option("zero", "--baseline", help="Deletion baseline: zero|blur|mean."),
    batch_size: int = typer.Option(32, "--batch-size", help="Perturbed images per forward."),
    images_per_batch: int = typer.Option(8, "--images-per-batch", help="Images explained at once."),
    preprocess: str = typer.Option(
        "auto",
        "--preprocess",
        help="What the model takes: auto (its own, as camlens explain), imagenet, unit, raw, tf "
        "or caffe.",
    ),
    size: int | None = typer.Option(
        None,
        "--size",
        min=8,
        help="Input side in pixels; each whole image is resized to it (default: a camlens "
        "checkpoint's or Keras model's own, else 224).",
    ),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate the first N images only."),
    target: str = typer.Option("pred", "--target", help="'pred' or a class index."),
    layer: str = typer.Option("auto", "--layer", help="'auto' or a dotted module name."),
    tolerance: float = typer.Option(
        0.0, "--tolerance", help="Pointing game tolerance in pixels (Zhang et al.: 15)."
    ),
    sanity: bool = typer.Option(False, "--sanity", help="Also run the sanity check (first batch)."),
    precision: str = typer.Option(
        "fp32",
        "--precision",
        help="Deletion/insertion's and Score-CAM's perturbed forwards: fp32 (exact), bf16, or "
        "int8 (PyTorch models on the CPU, several times faster, approximate).",
    ),
) -> None:
    """Score explanation METHODS on a folder of images: faithfulness (deletion, insertion,
    Average Drop, Increase in Confidence, ROAD) and, with --boxes, localisation.

    Example: camlens evaluate --model demo --out eval/
    """
    from rich.console import Console
    from rich.progress import Progress

    import camlens
    from camlens.metrics import report
    from camlens.metrics.faithfulness import check_precision
    from camlens.metrics.sanity import plot_sanity, sanity_check
    from camlens.preprocessing import input_size, resolve
    from camlens.registry import get

    try:
        network = load_model(model, weights)
        names = (
            camlens.methods()
            if method == "all"
            else [get(n).name for n in method.split(",") if n.strip()]
        )
        if data is not None:
            paths = find_images(data)[:limit]
            records = read_boxes(boxes) if boxes is not None else None
            prepare = resolve(preprocess, model, network)
            if prepare.note:
                typer.echo(f"note: {prepare.note}", err=True)
            if size is None:
                size = input_size(network)
            batches: Any = list(
                folder_batches(paths, data, records, prepare, size, images_per_batch)
            )
            have_boxes = records is not None
        elif model == "demo":
            batches = demo_samples(images_per_batch)
            if limit is not None:
                batches = _limit(batches, limit)
            have_boxes = True
        else:
            raise CamlensValueError("--data DIR is required unless --model demo")
        chosen = choose_metrics(metrics_, have_boxes)
        check_precision(precision)
        settings = report.Settings(
            steps=steps,
            baseline=baseline,
            batch_size=batch_size,
            tolerance=tolerance,
            target=None if target == "pred" else int(target),
            layer=layer,
            precision=precision,
        )
        err = Console(stderr=True)
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("evaluating", total=len(names) * len(batches))
            results = report.evaluate(
                network, batches, names, chosen, settings, lambda: progress.advance(task)
            )
        out.mkdir(parents=True, exist_ok=True)
        config = {
            "model": model,
            "data": str(data) if data else "demo samples",
            "images": sum(int(b[0].shape[0]) for b in batches),
            "metrics": chosen,
            "steps": steps,
            "baseline": baseline,
            "tolerance": tolerance,
            "target": target,
            "layer": layer,
            "precision": precision,
            "preprocess": prepare.name if data is not None else "unit (the demo model's own)",
            "size": size if data is not None else int(batches[0][0].shape[-1]),
        }
        report.write_csv(results, out / "metrics.csv")
        pictures = report.plot_curves(results, out)
        document: dict[str, Any] = {}
        if sanity:
            checks = []
            for name in names:
                try:
                    checks.append(sanity_check(network, batches[0][0][:8], name, layer=layer))
                except CamlensError as error:
                    err.print(f"sanity check skipped for {name}: {error}")
            if checks:
                pictures.append(plot_sanity(checks, out / "sanity.png"))
                document = {c.method: {"steps": c.steps, **c.curves()} for c in checks}
        report.write_json(results, out / "metrics.json", config)
        if document:
            import json

            saved = json.loads((out / "metrics.json").read_text())
            saved["sanity"] = document
            (out / "metrics.json").write_text(json.dumps(saved, indent=2))
        report.write_html(results, out / "report.html", pictures, config)
        _print_table(results, chosen)
        typer.echo(
            f"wrote {out / 'metrics.csv'}, metrics.json, report.html and "
            f"{len(pictures)} plot(s) in {out}"
        )
    except (CamlensError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(getattr(error, "exit_code", 2)) from error


def _limit(batches: list, count: int) -> list:
    kept, left = [], count
    for x, boxes, labels in batches:
        if left <= 0:
            break
        kept.append((x[:left], boxes[:left], labels[:left]))
        left -= x.shape[0]
    return kept


def _print_table(results: list, chosen: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    from camlens.metrics import report

    ranked = report.rank(results)
    key = report.rank_key(ranked[0])[0] if ranked else ""
    table = Table(title=f"camlens evaluate: methods ranked by {key}")
    table.add_column("#", justify="right")
    table.add_column("method")
    names = report.columns(results)
    for name in names:
        higher = report.METRICS[name][1]
        table.add_column(f"{name} {'↑' if higher else '↓'}", justify="right")
    skipped = []
    for index, result in enumerate(ranked, start=1):
        if result.error is not None:
            skipped.append(f"skipped {result.method}: {result.error}")
            continue
        means = result.means()
        table.add_row(
            str(index),
            result.method,
            *[f"{means[n]:.4f}" if n in means and not math.isnan(means[n]) else "" for n in names],
        )
    console = Console(width=max(100, 24 + 15 * len(names)))
    console.print(table)
    for line in skipped:
        console.print(line, soft_wrap=True, markup=False)
