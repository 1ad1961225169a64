"""``camlens explain``: maps for files, folders and globs; overlays, results and an HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from camlens.cli import app, options
from camlens.cli.errors import failed_inputs, guarded, printable

EPILOG = """
Examples:

  camlens explain cat.jpg --model torchvision:resnet50 --out out/

  camlens explain photos/ --model timm:resnet50 --method gradcam,cam --out out/

  camlens explain 'scans/**/*.png' --model pkg.nets:build --weights best.pth
  --labels classes.txt --target pneumonia --threshold 0.2 --boxes --out out/

  camlens explain val/ --model torchvision:resnet50 --labels-from-folders --out out/

  camlens explain photos/ --model torchvision:resnet18 --out out/ --resume

  camlens explain photos/ --model torchvision:fasterrcnn_resnet50_fpn --task detect
  --min-score 0.7 --out out/

  camlens explain s3://bucket/val/ --model torchvision:resnet50
  --out s3://bucket/runs/val --engine ray --address auto --workers 8 --gpus-per-worker 1

Writes a run folder: results.parquet (one row per image and method), maps/
(every map as an 8-bit PNG), overlays/, results.jsonl/csv and report.html;
camlens.load_run(OUT) reads it back. OUT may be an object store's prefix.

Exit codes: 0 all explained; 1 some inputs failed (listed; --resume retries
them); 2 bad usage (nothing done, or the run folder refused); 3 the run could
not go on (disk full, permissions, an internal error: the traceback is in
OUT/camlens.log, --resume continues); 130 interrupted (--resume continues).
"""


@app.command("explain", epilog=EPILOG)
@guarded
def explain(
    paths: Annotated[list[str], typer.Argument(help="Image files, folders (recursive) or globs.")],
    model: options.Model,
    out: Annotated[
        str,
        typer.Option(
            "--out",
            help="Output folder, or an object store's prefix: s3://bucket/prefix, gs://..., any "
            "pyarrow file system URI (both engines; credentials from the environment or the URI).",
        ),
    ],
    weights: options.Weights = None,
    labels: options.Labels = None,
    prompts: options.Prompts = None,
    method: options.Methods = "gradcam",
    target: options.Target = "pred",
    activation: options.Activation = None,
    layer: options.Layer = "auto",
    colormap: str = typer.Option("jet", "--colormap", help="Any matplotlib colormap name."),
    alpha: float = typer.Option(0.5, "--alpha", help="Opacity of the heatmap, 0 to 1."),
    threshold: float = typer.Option(
        None, "--threshold", help="Show the heatmap only where it is at least this (0 to 1)."
    ),
    boxes: bool = typer.Option(
        False, "--boxes", help="Draw the CAM paper's box (largest region >= 20% of the max)."
    ),
    contours: str = typer.Option("", "--contours", help="Iso-lines at these levels, e.g. 0.5,0.8."),
    batch_size: str = typer.Option(
        "auto",
        "--batch-size",
        help="Images per forward pass, or auto: 8 on the CPU; on a GPU, as many as its free "
        "memory holds (measured on a first batch, at most 256, a power of two); 64 for Ray "
        "actors with GPUs (halved where it does not fit).",
    ),
    size: options.Size = None,
    preprocess: options.Preprocess = "auto",
    device: options.Device = "auto",
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="Every method's passes: auto (bf16 where it measures fast: CUDA, some CPUs, for "
        "the methods whose bf16 maps agree with fp32's; else fp32), fp32 (exact), bf16 "
        "(autocast), or int8 (Score-CAM's masked forwards, PyTorch models on the CPU, about 3x "
        "faster, approximate). Each row records the precision used.",
    ),
    panel: bool = typer.Option(
        False, "--panel/--no-panel", help="Also save a three-panel figure per image (slow)."
    ),
    overlay_format: str = typer.Option(
        "jpg", "--overlay-format", help="Overlay files: jpg (default), webp or png."
    ),
    copy_images: bool = typer.Option(
        False, "--copy-images", help="Copy the inputs into OUT/images (a self-contained folder)."
    ),
    labels_from_folders: bool = typer.Option(
        False,
        "--labels-from-folders",
        help="Inputs are in class folders (root/<class>/<image>): record the true class and "
        "whether the prediction is right.",
    ),
    class_map: Path = typer.Option(
        None,
        "--class-map",
        help="With --labels-from-folders: the class of each folder not named as one of the "
        "model's classes: a JSON object or a two-column CSV/TSV, folder -> class name or index.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Skip images already in the run."),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace an existing camlens run in --out, removing only what it wrote.",
    ),
    seed: options.Seed = 0,
    trust_pickle: options.TrustPickle = False,
    quiet: options.Quiet = False,
    engine: str = typer.Option(
        "local", "--engine", help="local (this process) or ray (a pool of Ray actors)."
    ),
    address: str = typer.Option(
        None,
        "--address",
        help="--engine ray: auto (this machine's cluster) or ray://HOST:PORT; default: start "
        "Ray on this machine's cores.",
    ),
    workers: int = typer.Option(1, "--workers", help="--engine ray: actors (model copies)."),
    gpus_per_worker: float = typer.Option(
        0.0, "--gpus-per-worker", help="--engine ray: GPUs per actor (0: CPU actors)."
    ),
    decoders: int = typer.Option(
        2,
        "--decoders",
        help="Images decoded at once: threads (local engine), or CPU tasks feeding the actors "
        "(--engine ray).",
    ),
    task: str = typer.Option(
        "classify",
        "--task",
        help="classify; detect (a detector: each detection's own map with its box and label); "
        "segment (a segmentation model: the --target class's predicted region).",
    ),
    min_score: float = typer.Option(
        0.5, "--min-score", help="--task detect: the lowest detection score explained."
    ),
    detections: int = typer.Option(
        20, "--detections", min=1, help="--task detect: at most this many detections per image."
    ),
) -> None:
    """Explain images with a model: maps as data, overlays, results.parquet and a report.

    The model sees each whole image resized to --size x --size; overlays and boxes
    are drawn on the image at its original resolution.
    """
    from camlens.runs.records import RenderOptions
    from camlens.runs.settings import ExplainSettings, ModelSettings
    from camlens.runs.store import joined

    # everything that can be wrong with the command is checked before any work starts
    network = ModelSettings(model, weights, preprocess, size, labels, trust_pickle=trust_pickle,
                            seed=seed, device=device, prompts=prompts)  # fmt: skip
    request = ExplainSettings(
        model=network,
        out=out,
        methods=method,
        target=target,
        activation=activation,
        layer=layer,
        precision=precision,
        batch_size=batch_size,
        render=RenderOptions(
            colormap=colormap,
            alpha=alpha,
            threshold=threshold,
            boxes=boxes,
            contours=options.floats(contours, "--contours"),
            overlay_format=overlay_format,
            panel=panel,
            copy_images=copy_images,
        ),
        resume=resume,
        overwrite=overwrite,
        labels_from_folders=labels_from_folders,
        class_map=class_map,
        task=task,
        min_score=min_score,
        detections=detections,
        cluster=options.cluster(engine, address, workers, gpus_per_worker, device),
        decoders=decoders,
    )
    session = request.session()
    session.progress = not quiet  # Score-CAM's bar under the run's
    settings = request.run_settings(session)
    options.print_notes(session)
    summary = _run(request, session, settings, paths, quiet)
    typer.echo(
        f"{summary.done} image(s) explained with {', '.join(settings.methods)} in "
        f"{summary.seconds:.1f} s"
        + (f", {summary.resumed} already done" if summary.resumed else "")
        + (f", {summary.ignored} non-image file(s) ignored" if summary.ignored else "")
        + f"; report: {joined(request.out, 'report.html')}"
    )
    if summary.failures:
        typer.echo(f"{len(summary.failures)} input(s) failed:", err=True)
        for failure in summary.failures:
            typer.echo(printable(f"  {failure.path}: {failure.reason}"), err=True)
        failed_inputs(len(summary.failures))


def _run(request: Any, session: Any, settings: Any, paths: list[str], quiet: bool) -> Any:
    """The run on its engine (tasks, this process or Ray), with a progress bar."""
    from camlens.cli.progress import progress_bar
    from camlens.runs import distributed
    from camlens.runs.local import explain_files
    from camlens.runs.tasks import explain_task_files

    title = f"camlens: {request.model.model} ({', '.join(settings.methods)})"
    with progress_bar("explaining", enabled=not quiet) as (total, advance):
        run: dict[str, Any] = dict(
            echo=lambda text: typer.echo(printable(text), err=True),
            total=total,
            advance=advance,
            title=title,
        )
        task = request.task_settings()
        if task is not None:
            return explain_task_files(session, paths, request.out, settings, task, **run)
        if request.cluster is None:
            return explain_files(session, paths, request.out, settings, **run)
        return distributed.explain_files(
            session, request.model.spec(), paths, request.out, settings, request.cluster, **run
        )
