"""``camlens evaluate``: faithfulness and localisation tables for methods on a folder of images.

Boxes come from a CSV (``path,x0,y0,x1,y1[,label]``) or Pascal VOC XML (see
:mod:`camlens.images.annotations`); the work is :func:`camlens.runs.evaluation.evaluate`'s.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from camlens.cli import app, options
from camlens.cli.errors import guarded
from camlens.errors import CamlensValueError


@app.command()
@guarded
def evaluate(
    model: options.Model,
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.csv/json, PNGs, report.")],
    data: Path | None = typer.Option(None, "--data", help="Folder of images (searched deeply)."),
    boxes: Path | None = typer.Option(
        None, "--boxes", help="Boxes: a CSV path,x0,y0,x1,y1[,label] or Pascal VOC XML (folder)."
    ),
    method: options.Methods = "all",
    metrics_: str = typer.Option(
        "default",
        "--metrics",
        help="'default' (deletion, insertion, average_drop, increase and, with boxes, the "
        "localisation metrics), 'all' (adds road_morf, road_lerf) or names, comma-separated.",
    ),
    weights: options.Weights = None,
    seed: options.Seed = 0,
    device: options.Device = "auto",
    steps: int = typer.Option(50, "--steps", help="Deletion/insertion steps."),
    baseline: str = typer.Option("zero", "--baseline", help="Deletion baseline: zero|blur|mean."),
    batch_size: int = typer.Option(32, "--batch-size", help="Perturbed images per forward."),
    images_per_batch: int = typer.Option(8, "--images-per-batch", help="Images explained at once."),
    preprocess: options.Preprocess = "auto",
    size: options.Size = None,
    limit: int | None = typer.Option(None, "--limit", help="Evaluate the first N images only."),
    target: options.Target = "pred",
    layer: options.Layer = "auto",
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
    from camlens.cli.progress import progress_bar
    from camlens.metrics import report
    from camlens.metrics.faithfulness import check_precision
    from camlens.models.files import BUNDLED
    from camlens.runs.evaluation import choose_metrics, evaluate
    from camlens.runs.session import method_names
    from camlens.runs.settings import ModelSettings

    # everything about the command is checked before the model or any image is loaded
    if data is None and model not in BUNDLED:
        raise CamlensValueError("--data DIR is required unless --model demo")
    chosen = choose_metrics(metrics_, have_boxes=boxes is not None or data is None)
    check_precision(precision)
    names = method_names(method)
    session = ModelSettings(model, weights, preprocess, size, seed=seed, device=device).load()
    names = session.usable(names)
    options.print_notes(session)
    session.check(names, layer, precision)
    settings = report.Settings(
        steps=steps,
        baseline=baseline,
        batch_size=batch_size,
        tolerance=tolerance,
        target=_target(session, target),
        layer=layer,
        precision=precision,
        progress=True,
    )
    with progress_bar("evaluating", enabled=True) as (total, advance):
        done = evaluate(
            session, out, names, chosen, settings, data, boxes, images_per_batch, limit,
            sanity, advance=lambda: advance(1), total=total,
        )  # fmt: skip
    for line in done.skipped:
        typer.echo(line, err=True)
    _print_table(done.results, chosen)
    typer.echo(
        f"wrote {out / 'metrics.csv'}, metrics.json, report.html and "
        f"{len(done.pictures)} plot(s) in {out}"
    )


def _target(session, text: str) -> int | None:
    chosen = session.target(text)
    if chosen == "label":
        raise CamlensValueError("--target label is camlens explain's (with --labels-from-folders)")
    if isinstance(chosen, str):
        raise CamlensValueError(
            f"--target {chosen} is camlens explain's: the metrics score one map per image; pass "
            "'pred' or a class"
        )
    return chosen


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
