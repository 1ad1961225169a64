"""``camlens explain``: maps for images, one overlay PNG per image and method."""

from __future__ import annotations

from pathlib import Path

import typer
from PIL import Image

from camlens.cli import app
from camlens.errors import CamlensError


@app.command()
def explain(
    paths: list[Path] = typer.Argument(..., help="Image files to explain."),
    model: str = typer.Option(..., "--model", help="Model spec, e.g. torchvision:resnet18."),
    weights: str = typer.Option(
        "DEFAULT", "--weights", help="DEFAULT (download), none (random) or a local .pth file."
    ),
    method: str = typer.Option("gradcam", "--method", help="Method name(s), comma-separated."),
    target: str = typer.Option("pred", "--target", help="'pred' or a class index."),
    layer: str = typer.Option("auto", "--layer", help="'auto' or a dotted module name."),
    out: Path = typer.Option(..., "--out", help="Folder for the overlay PNGs."),
) -> None:
    """Explain IMAGES with MODEL and write an overlay PNG per image and method.

    Example: camlens explain cat.jpg --model torchvision:resnet18 --weights none --out out/
    """
    import camlens
    from camlens.models import load_spec
    from camlens.registry import get

    try:
        names = [get(name).name for name in method.split(",") if name.strip()]
        chosen_target = None if target == "pred" else int(target)
        network = load_spec(model, None if weights == "none" else weights)
        x, originals = camlens.load_images(paths)
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            exp = camlens.explain(network, x, method=name, target=chosen_target, layer=layer)
            for path, original, heat, cls, prob in zip(
                paths, originals, exp.maps, exp.targets, exp.probs, strict=False
            ):
                file = out / f"{Path(path).stem}_{name}.png"
                Image.fromarray(camlens.overlay(original, heat)).save(file)
                typer.echo(f"{file}  class {int(cls)}  p={float(prob):.3f}  layer {exp.layer}")
    except (CamlensError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(getattr(error, "exit_code", 2)) from error
