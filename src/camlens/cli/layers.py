"""``camlens layers``: the layers of a model that can be explained, and the "auto" choice."""

from __future__ import annotations

import typer

from camlens.cli import app, usage_error


@app.command("layers")
def layers_command(
    model: str = typer.Option(..., "--model", help="Model spec (see camlens explain --help)."),
    weights: str = typer.Option(
        None, "--weights", help="DEFAULT, none or a local .pth (default: none here)."
    ),
    size: int = typer.Option(224, "--size", help="Input side the layers are surveyed at."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow a pickled model."),
) -> None:
    """Print the candidate target layers with their output shapes; '*' marks layer=auto.

    Example: camlens layers --model torchvision:resnet18
    """
    import torch

    import camlens
    from camlens.models.specs import load_spec

    try:
        network = load_spec(model, weights, trust_pickle=trust_pickle)
        infos, auto = camlens.layers(network, torch.zeros(1, 3, size, size))
    except camlens.CamlensError as error:
        usage_error(str(error))
    width = max((len(info.name) for info in infos), default=4)
    typer.echo(f"  {'layer':<{width}}  {'module':<22} output (one image)  layout")
    for info in infos:
        mark = "*" if info.name == auto else " "
        shape = "x".join(str(s) for s in info.shape[1:])
        typer.echo(f"{mark} {info.name:<{width}}  {info.kind:<22} {shape:<19} {info.layout.kind}")
    typer.echo(f"auto: {auto}" if auto else "auto: none found; pass --layer NAME")
