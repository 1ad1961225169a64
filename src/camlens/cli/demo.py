"""``camlens demo``: the bundled model on the bundled samples, every method, scored."""

from __future__ import annotations

from pathlib import Path

import typer

from camlens.cli import app, options
from camlens.cli.errors import failed_inputs, guarded


@app.command()
@guarded
def demo(
    out: Path = typer.Option(Path("camlens-demo"), "--out", help="Folder for the results."),
    method: options.Methods = "all",
    quiet: options.Quiet = False,
) -> None:
    """Explain the 16 bundled cluttered-digit samples with the bundled model (no download).

    Writes overlays with boxes, panels, results.jsonl/csv and report.html into --out, and prints
    per method the pointing-game hit rate and the mean IoU of the CAM paper's box against the
    samples' ground-truth boxes.

    Example: camlens demo --out camlens-demo
    """
    from rich.console import Console
    from rich.table import Table

    from camlens.cli.progress import progress_bar
    from camlens.runs.demo import run_demo
    from camlens.runs.session import method_names

    chosen = method_names(method)
    with progress_bar("explaining", enabled=not quiet) as (total, advance):
        scores, summary = run_demo(
            out, chosen, echo=lambda text: typer.echo(text, err=True), total=total, advance=advance
        )
    table = Table(title="Localisation on the 16 bundled samples (predicted class explained)")
    table.add_column("method")
    table.add_column("pointing game", justify="right")
    table.add_column("mean box IoU", justify="right")
    table.add_column("s / image", justify="right")
    for score in scores:
        table.add_row(
            score.method,
            f"{score.pointing_game:.3f}",
            f"{score.box_iou:.3f}",
            f"{score.seconds:.4f}",
        )
    Console(width=100).print(table)
    typer.echo(f"report: {out / 'report.html'}")
    if summary.failures:
        failed_inputs(len(summary.failures))
