"""``camlens explain``: maps for files, folders and globs; overlays, results and an HTML report."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import typer

from camlens.cli import app, usage_error

EPILOG = """
Examples:

  camlens explain cat.jpg --model torchvision:resnet50 --out out/

  camlens explain photos/ --model timm:resnet50 --method gradcam,cam --out out/

  camlens explain 'scans/**/*.png' --model pkg.nets:build --weights best.pth
  --labels classes.txt --target pneumonia --threshold 0.2 --boxes --out out/

  camlens explain photos/ --model torchvision:resnet18 --out out/ --resume

Writes overlays/, panels/, results.jsonl (appended as images finish),
results.csv and report.html into --out. Exit code 0: all explained;
1: some inputs failed (listed); 2: bad usage, nothing done.
"""


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        usage_error(f"{option} expects comma-separated numbers in [0, 1], got {text!r}")
    if any(not 0.0 <= v <= 1.0 for v in values):
        usage_error(f"{option} expects numbers in [0, 1], got {text!r}")
    return values


def _target(text: str, names: list[str] | None, classes: int) -> int | None:
    """--target: 'pred', a class index or a class name."""
    if text == "pred":
        return None
    try:
        index = int(text)
    except ValueError:
        lookup = {name.lower(): i for i, name in reversed(list(enumerate(names or [])))}
        if text.lower() not in lookup:
            import difflib

            close = difflib.get_close_matches(text, names or [], n=5)
            hint = f"; close names: {', '.join(close)}" if close else ""
            known = "" if names else " (no class names known: pass --labels FILE)"
            usage_error(
                f"--target {text!r} is not 'pred', a class index or a class name{known}{hint}"
            )
        return lookup[text.lower()]
    valid = 2 if classes == 1 else classes
    if not 0 <= index < valid:
        usage_error(
            f"--target {index} is out of range: the model has {valid} classes (0..{valid - 1})"
        )
    return index


@app.command("explain", epilog=EPILOG)
def explain(
    paths: list[str] = typer.Argument(..., help="Image files, folders (recursive) or globs."),
    model: str = typer.Option(
        ...,
        "--model",
        help="torchvision:NAME, timm:NAME, a TorchScript file, a camlens checkpoint folder or "
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
    target: str = typer.Option("pred", "--target", help="'pred', a class index or a class name."),
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
    panel: bool = typer.Option(True, "--panel/--no-panel", help="Save a panel figure per image."),
    resume: bool = typer.Option(False, "--resume", help="Skip images already in results.jsonl."),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Allow a model file that is a full pickle (runs its code)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Explain images with a model: overlays, results and an HTML report.

    The model sees each whole image resized to --size x --size; overlays and boxes
    are drawn on the image at its original resolution.
    """
    import torch

    import camlens
    from camlens.backends import adapter_for
    from camlens.labels import load_labels
    from camlens.methods.perturbation import PRECISIONS
    from camlens.models import class_names, kind_of, load_spec
    from camlens.preprocessing import MODES
    from camlens.registry import get, options_for
    from camlens.render import colormap_table
    from camlens.runner import Options, run

    # everything that can be wrong with the command is checked before any work starts
    try:
        names_requested = [name.strip() for name in method.split(",") if name.strip()]
        if not names_requested:
            usage_error("--method is empty; camlens methods lists the names")
        chosen = list(dict.fromkeys(get(name).name for name in names_requested))
        colormap_table(colormap)
        if not 0.0 <= alpha <= 1.0:
            usage_error(f"--alpha must be in [0, 1], got {alpha}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            usage_error(f"--threshold must be in [0, 1], got {threshold}")
        levels = _floats(contours, "--contours")
        names = load_labels(labels) if labels is not None else None
        if preprocess not in MODES:
            usage_error(f"--preprocess must be one of {', '.join(MODES)}, got {preprocess!r}")
        if weights is None and kind_of(model) in ("torchvision", "timm"):
            weights = "DEFAULT"
        network = load_spec(model, weights, trust_pickle=trust_pickle)
        from camlens.preprocessing import input_size, resolve

        prepare = resolve(preprocess, model, network)
        if size is None:
            size = input_size(network)
        if prepare.note:
            typer.echo(f"note: {prepare.note}", err=True)
        where = _device(device)
        if isinstance(network, torch.nn.Module):
            network = network.to(where)
        adapter = adapter_for(network)
        blank = prepare(torch.zeros(1, 3, size, size))
        probe = _layout(adapter, blank)
        classes = int(adapter.logits(blank).shape[1])  # canonical
        if names is None:
            names = class_names(model, network, classes)
        elif len(names) != classes:
            typer.echo(
                f"warning: --labels has {len(names)} names, the model {classes} outputs", err=True
            )
        chosen_target = _target(target, names, classes)
        if precision not in PRECISIONS:
            usage_error(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "int8" and any(options_for(name, precision=precision) for name in chosen):
            with warnings.catch_warnings():  # a check on a blank image: its gap means nothing
                warnings.simplefilter("ignore")
                with adapter.int8(blank):
                    pass
        if any(get(name).uses_layer for name in chosen):
            try:
                adapter.resolve_layers(layer, probe)
            except RuntimeError as error:
                if "ScriptModule" not in str(error):
                    raise
                usage_error(
                    f"{model} is a TorchScript model, which takes no hooks, so layer methods "
                    f"({', '.join(n for n in chosen if get(n).uses_layer)}) cannot see inside "
                    "it; load the Python model instead (torchvision:NAME or package.module:"
                    "factory with --weights FILE)"
                )
    except camlens.CamlensError as error:
        usage_error(str(error))
    except RuntimeError as error:
        usage_error(
            f"the model failed on a (1, 3, {size}, {size}) input: {error}; check --size and "
            "--preprocess"
        )
    if panel and importlib.util.find_spec("matplotlib") is None:
        typer.echo("note: no panels without matplotlib (pip install matplotlib)", err=True)
        panel = False
    options = Options(
        methods=chosen,
        target=chosen_target,
        layer=layer,
        colormap=colormap,
        alpha=alpha,
        threshold=threshold,
        boxes=boxes,
        contours=levels,
        batch_size=batch_size,
        size=size,
        normalize=False,
        device=str(where),
        panel=panel,
        resume=resume,
        precision=precision,
    )
    summary = run(
        network,
        paths,
        out,
        options,
        names,
        echo=lambda text: typer.echo(text, err=True),
        progress=not quiet,
        layout=lambda x: _layout(adapter, prepare(x)),
        title=f"camlens: {model} ({', '.join(chosen)})",
    )
    typer.echo(
        f"{summary.done} image(s) explained with {', '.join(chosen)} in {summary.seconds:.1f} s"
        + (f", {summary.resumed} already done" if summary.resumed else "")
        + f"; report: {out / 'report.html'}"
    )
    if summary.failures:
        typer.echo(f"{len(summary.failures)} input(s) failed:", err=True)
        for failure in summary.failures:
            typer.echo(f"  {failure.path}: {failure.reason}", err=True)
    raise typer.Exit(summary.exit_code)


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        usage_error(f"--device {name!r} is not a device name; expected auto, cpu, cuda, cuda:1...")
    if device.type == "cuda" and not torch.cuda.is_available():
        usage_error("--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu")
    return device


def _layout(adapter: Any, x: Any) -> Any:
    """Channels-last input for a Keras model, (B, C, H, W) otherwise."""
    if getattr(adapter, "framework", "torch") == "keras":
        return x.permute(0, 2, 3, 1).contiguous()
    return x
