"""``camlens explain``: maps for files, folders and globs; overlays, results and an HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from camlens.cli import app, usage_error
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

  camlens explain s3://bucket/val/ --model torchvision:resnet50 --out out/
  --engine ray --address auto --workers 8 --gpus-per-worker 1

Writes a run folder: results.parquet (one row per image and method), maps/
(every map as an 8-bit PNG), overlays/, results.jsonl/csv and report.html;
camlens.load_run(OUT) reads it back.

Exit codes: 0 all explained; 1 some inputs failed (listed; --resume retries
them); 2 bad usage (nothing done, or the run folder refused); 3 the run could
not go on (disk full, permissions, an internal error: the traceback is in
OUT/camlens.log, --resume continues); 130 interrupted (--resume continues).
"""


def _check(
    out: Path, resume: bool, overwrite: bool, alpha: float, threshold: float | None,
    overlay_format: str, min_score: float,
) -> None:  # fmt: skip
    """The options' own checks, and that ``out`` can take this run (before the model loads)."""
    from camlens.runs.records import OVERLAY_FORMATS
    from camlens.runs.writer import claim

    if not 0.0 <= alpha <= 1.0:
        usage_error(f"--alpha must be in [0, 1], got {alpha}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        usage_error(f"--threshold must be in [0, 1], got {threshold}")
    if overlay_format not in OVERLAY_FORMATS:
        usage_error(
            f"--overlay-format must be one of {', '.join(OVERLAY_FORMATS)}, got {overlay_format!r}"
        )
    if not 0.0 <= min_score <= 1.0:
        usage_error(f"--min-score must be in [0, 1], got {min_score}")
    if resume and overwrite:
        usage_error("--resume continues the run in --out, --overwrite replaces it: pass one")
    claim(out, resume=resume, overwrite=overwrite)


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        usage_error(f"{option} expects comma-separated numbers in [0, 1], got {text!r}")
    if any(not 0.0 <= v <= 1.0 for v in values):
        usage_error(f"{option} expects numbers in [0, 1], got {text!r}")
    return values


@app.command("explain", epilog=EPILOG)
@guarded
def explain(
    paths: list[str] = typer.Argument(..., help="Image files, folders (recursive) or globs."),
    model: str = typer.Option(
        ...,
        "--model",
        help="torchvision:NAME, timm:NAME, a torch.export .pt2 file, a TorchScript file, a "
        "camlens checkpoint folder or "
        "'demo', a .keras file, keras:NAME, or package.module:factory.",
    ),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    weights: str = typer.Option(
        None,
        "--weights",
        help="DEFAULT (download pretrained; the default for torchvision:/timm:), none (random) "
        "or a local state-dict file.",
    ),
    labels: Path = typer.Option(
        None, "--labels", help="Class names: a text file (one a line) or JSON list/object."
    ),
    method: str = typer.Option(
        "gradcam", "--method", help="Method name(s), comma-separated (camlens methods lists them)."
    ),
    target: str = typer.Option(
        "pred",
        "--target",
        help="'pred', 'label' (the true class, with --labels-from-folders), a class index or "
        "a class name.",
    ),
    layer: str = typer.Option(
        "auto", "--layer", help="'auto' or a dotted module name (camlens layers lists them)."
    ),
    colormap: str = typer.Option("jet", "--colormap", help="Any matplotlib colormap name."),
    alpha: float = typer.Option(0.5, "--alpha", help="Opacity of the heatmap, 0 to 1."),
    threshold: float = typer.Option(
        None, "--threshold", help="Show the heatmap only where it is at least this (0 to 1)."
    ),
    boxes: bool = typer.Option(
        False, "--boxes", help="Draw the CAM paper's box (largest region >= 20% of the max)."
    ),
    contours: str = typer.Option("", "--contours", help="Iso-lines at these levels, e.g. 0.5,0.8."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per forward pass."),
    size: int | None = typer.Option(
        None,
        "--size",
        min=8,
        help="The model's input side in pixels (default: a camlens "
        "checkpoint's or Keras model's own input size, else 224).",
    ),
    preprocess: str = typer.Option(
        "auto",
        "--preprocess",
        help="What the model takes: auto (its own: a checkpoint's, a timm model's mean/std, a "
        "keras:NAME application's preprocess_input), imagenet (mean/std), unit ([0, 1]), raw "
        "([0, 255]), tf ([-1, 1]) or caffe (BGR, mean-subtracted).",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps..."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="Score-CAM's masked forwards: auto (bf16 where it measures fast: CUDA, some CPUs; "
        "else fp32), fp32 (exact), bf16, or int8 (PyTorch models on the CPU, about 3x faster, "
        "approximate).",
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
    seed: int = typer.Option(
        0,
        "--seed",
        min=0,
        help="Random weights (--weights none) are drawn from this seed, so a --resume, the Ray "
        "workers and camlens serve see the same network.",
    ),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Allow a model file that is a full pickle (runs its code)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
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
    from camlens.cli.progress import progress_bar
    from camlens.images.labels import load_class_map
    from camlens.runs import distributed
    from camlens.runs.local import RunSettings, explain_files
    from camlens.runs.records import RenderOptions
    from camlens.runs.session import Session, method_names
    from camlens.runs.tasks import TaskSettings, explain_task_files, preprocess_for
    from camlens.visualize.render import colormap_table

    # everything that can be wrong with the command is checked before any work starts
    chosen = method_names(method)
    colormap_table(colormap)
    _check(out, resume, overwrite, alpha, threshold, overlay_format, min_score)
    levels = _floats(contours, "--contours")
    cluster = None
    if engine == "ray":
        cluster = distributed.Cluster(address, workers, gpus_per_worker, device=device)
        cluster.check()
    elif engine != "local":
        usage_error(f"--engine must be local or ray, got {engine!r}")
    elif address is not None or workers != 1 or gpus_per_worker:
        usage_error("--address, --workers and --gpus-per-worker need --engine ray")
    preprocess = preprocess_for(task, preprocess)
    if task != "classify" and cluster is not None:
        usage_error(f"--task {task} runs on the local engine; drop --engine ray")
    spec: dict[str, Any] = dict(
        spec=model, weights=weights, preprocess=preprocess, size=size, labels=labels,
        trust_pickle=trust_pickle, seed=seed,
    )  # fmt: skip
    session = Session.from_spec(**spec, device=device if cluster is None else "cpu")
    session.progress = not quiet  # Score-CAM's bar under the run's
    for note in session.notes:
        typer.echo(f"note: {note}", err=True)
    chosen_target = session.target(target)
    if chosen_target == "label" and task != "classify":
        usage_error(f"--task {task} takes --target pred or a class, not label")
    if chosen_target == "label" and not labels_from_folders:
        usage_error("--target label explains the true class: add --labels-from-folders")
    if class_map is not None and not labels_from_folders:
        usage_error("--class-map names the classes of folders: add --labels-from-folders")
    folder_classes = load_class_map(class_map) if class_map is not None else None
    session.check(chosen, layer, precision)
    settings = RunSettings(
        methods=chosen,
        target=chosen_target,
        layer=layer,
        precision=precision,
        batch_size=batch_size,
        render=RenderOptions(
            colormap=colormap,
            alpha=alpha,
            threshold=threshold,
            boxes=boxes,
            contours=levels,
            overlay_format=overlay_format,
            panel=panel,
            copy_images=copy_images,
        ),
        resume=resume,
        labels_from_folders=labels_from_folders,
        class_map=folder_classes,
        overwrite=overwrite,
    )
    with progress_bar("explaining", enabled=not quiet) as (total, advance):
        run: dict[str, Any] = dict(
            echo=lambda text: typer.echo(printable(text), err=True),
            total=total,
            advance=advance,
            title=f"camlens: {model} ({', '.join(chosen)})",
        )
        if task != "classify":
            chosen_task = TaskSettings(task, min_score, detections)
            summary = explain_task_files(session, paths, out, settings, chosen_task, **run)
        elif cluster is None:
            summary = explain_files(session, paths, out, settings, **run)
        else:
            summary = distributed.explain_files(session, spec, paths, out, settings, cluster, **run)
    typer.echo(
        f"{summary.done} image(s) explained with {', '.join(chosen)} in {summary.seconds:.1f} s"
        + (f", {summary.resumed} already done" if summary.resumed else "")
        + (f", {summary.ignored} non-image file(s) ignored" if summary.ignored else "")
        + f"; report: {out / 'report.html'}"
    )
    if summary.failures:
        typer.echo(f"{len(summary.failures)} input(s) failed:", err=True)
        for failure in summary.failures:
            typer.echo(printable(f"  {failure.path}: {failure.reason}"), err=True)
        failed_inputs(len(summary.failures))
