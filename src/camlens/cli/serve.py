"""``camlens serve``: the explorer in the browser (the JSON API and its page, see docs/serve.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from camlens.cli import app, options, usage_error


@app.command("serve")
def serve(
    model: Annotated[
        str,
        typer.Option(
            "--model", help="Model spec (see camlens explain --help); default the demo model."
        ),
    ] = "demo",
    weights: options.Weights = None,
    labels: options.Labels = None,
    prompts: options.Prompts = None,
    run: list[Path] = typer.Option([], "--run", help="A run folder to browse (repeatable)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8765, "--port", help="Port to bind."),
    token: str = typer.Option(
        None, "--token", help="Required off loopback: the page sends it (printable ASCII)."
    ),
    size: options.Size = None,
    preprocess: options.Preprocess = "auto",
    device: options.Device = "auto",
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest upload."),
    trust_pickle: options.TrustPickle = False,
    seed: options.Seed = 0,
    precision: str = typer.Option(
        "auto", "--precision", help="The methods' precision: auto, fp32, bf16 or int8 (as explain)."
    ),
) -> None:
    """Serve the explorer: upload an image, click a class, compare methods and layers.

    Example: camlens serve --model torchvision:resnet50 --run out/
    """
    import camlens
    from camlens.serve.launch import Settings, launch

    settings = Settings(
        model, weights, preprocess, size, labels, trust_pickle=trust_pickle, seed=seed,
        device=device, prompts=prompts, runs=run, host=host, port=port, token=token,
        precision=precision,
    )  # fmt: skip
    try:
        launch(
            settings,
            max_bytes=int(max_upload_mb * 1024 * 1024),
            echo=lambda text: typer.echo(text, err=True),
        )
    except camlens.CamlensError as error:
        usage_error(str(error))
