"""The options several commands share, declared once (``Annotated`` types: each command keeps its
own default), and the small parsers and printers the commands share.

Importing this module imports no torch: ``camlens --help`` stays quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from camlens.cli import usage_error

if TYPE_CHECKING:
    from camlens.runs.distributed import Cluster

Model = Annotated[
    str,
    typer.Option(
        "--model",
        help="torchvision:NAME, timm:NAME, a torch.export .pt2 file, a TorchScript file, a "
        "camlens checkpoint folder or 'demo', a .keras file, keras:NAME, open_clip:ARCH or "
        "hf:PATH_OR_NAME (with --prompts), or package.module:factory.",
    ),
]
Weights = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="DEFAULT (download pretrained; the default for torchvision:/timm:), none (random), "
        "a local state-dict file, or an open_clip pretrained tag (openai...).",
    ),
]
Prompts = Annotated[
    str | None,
    typer.Option(
        "--prompts",
        help="An image-text model's classes (open_clip:ARCH, hf:PATH_OR_NAME): comma-separated "
        "prompts ('a dog,a cat') or a text file, one prompt a line.",
    ),
]
Labels = Annotated[
    Path | None,
    typer.Option("--labels", help="Class names: a text file (one a line) or JSON list/object."),
]
Size = Annotated[
    int | None,
    typer.Option(
        "--size",
        min=8,
        help="The model's input side in pixels; each whole image is resized to it (default: a "
        "camlens checkpoint's or Keras model's own input size, else 224).",
    ),
]
Preprocess = Annotated[
    str,
    typer.Option(
        "--preprocess",
        help="What the model takes: auto (its own: a checkpoint's, a timm model's mean/std, a "
        "keras:NAME application's preprocess_input), imagenet (mean/std), unit ([0, 1]), raw "
        "([0, 255]), tf ([-1, 1]) or caffe (BGR, mean-subtracted).",
    ),
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, mps...")]
Seed = Annotated[
    int,
    typer.Option(
        "--seed",
        min=0,
        help="Random weights (--weights none) are drawn from this seed, so a --resume, the Ray "
        "workers and camlens serve see the same network.",
    ),
]
TrustPickle = Annotated[
    bool,
    typer.Option(
        "--trust-pickle", help="Allow a model file that is a full pickle (runs its code)."
    ),
]
Methods = Annotated[
    str,
    typer.Option(
        "--method",
        help="Method name(s), comma-separated, or 'all' (camlens methods lists them).",
    ),
]
Target = Annotated[
    str,
    typer.Option(
        "--target",
        help="'pred', 'label' (the true class, with --labels-from-folders; camlens explain), a "
        "class index or a class name; several per image: topK (the K best classes) or above:P "
        "(every class whose probability reaches P); output:K (the K-th output of a model that "
        "is not a classifier).",
    ),
]
Activation = Annotated[
    str | None,
    typer.Option(
        "--activation",
        help="How probabilities are read from the logits: softmax (default for classes), sigmoid "
        "(multi-label models: --target above:P) or none (default for --target output:K).",
    ),
]
Layer = Annotated[
    str,
    typer.Option("--layer", help="'auto' or a dotted module name (camlens layers lists them)."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def floats(text: str, option: str) -> tuple[float, ...]:
    """Comma-separated numbers in [0, 1] (``--contours``)."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        usage_error(f"{option} expects comma-separated numbers in [0, 1], got {text!r}")
    if any(not 0.0 <= v <= 1.0 for v in values):
        usage_error(f"{option} expects numbers in [0, 1], got {text!r}")
    return values


def cluster(
    engine: str, address: str | None, workers: int, gpus_per_worker: float, device: str
) -> Cluster | None:
    """``--engine`` and its Ray options: the Ray cluster to run on, or None for this process."""
    if engine == "ray":
        from camlens.runs.distributed import Cluster

        return Cluster(address, workers, gpus_per_worker, device=device)
    if engine != "local":
        usage_error(f"--engine must be local or ray, got {engine!r}")
    if address is not None or workers != 1 or gpus_per_worker:
        usage_error("--address, --workers and --gpus-per-worker need --engine ray")
    return None


def print_notes(session: Any) -> None:
    """The session's notes (a guessed input scale, a label count that differs) on stderr."""
    for note in session.notes:
        typer.echo(f"note: {note}", err=True)
