"""``camlens layers``: the layers of a model that can be explained, and the "auto" choice."""

from __future__ import annotations

from typing import Annotated

import typer

from camlens.cli import app, options
from camlens.cli.errors import guarded


@app.command("layers")
@guarded
def layers_command(
    model: options.Model,
    weights: Annotated[
        str | None,
        typer.Option("--weights", help="DEFAULT, none or a local .pth (default: none here)."),
    ] = None,
    size: options.Size = None,
    trust_pickle: options.TrustPickle = False,
    prompts: options.Prompts = None,
) -> None:
    """Print the candidate target layers with their output shapes at the model's input (as
    camlens explain feeds it); '*' marks layer=auto.

    Example: camlens layers --model torchvision:resnet18
    """
    from camlens.runs.settings import ModelSettings

    chosen = ModelSettings(
        model, weights or "none", size=size, trust_pickle=trust_pickle, prompts=prompts
    )
    infos, auto = chosen.load(device="cpu").layers()
    width = max((len(info.name) for info in infos), default=4)
    typer.echo(f"  {'layer':<{width}}  {'module':<22} output (one image)  layout")
    for info in infos:
        mark = "*" if info.name == auto else " "
        shape = "x".join(str(s) for s in info.shape[1:])
        typer.echo(f"{mark} {info.name:<{width}}  {info.kind:<22} {shape:<19} {info.layout.kind}")
    typer.echo(f"auto: {auto}" if auto else "auto: none found; pass --layer NAME")
