"""``camlens serve``: the explorer in the browser (the JSON API and its page, see docs/serve.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from camlens.cli import app, usage_error


@app.command("serve")
def serve(
    model: str = typer.Option(
        "demo", "--model", help="Model spec (see camlens explain --help); default the demo model."
    ),
    weights: str = typer.Option(None, "--weights", help="DEFAULT, none or a local state dict."),
    labels: Path = typer.Option(None, "--labels", help="Class names: text file or JSON list."),
    run: list[Path] = typer.Option([], "--run", help="A run folder to browse (repeatable)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8765, "--port", help="Port to bind."),
    token: str = typer.Option(
        None, "--token", help="Required off loopback: the page sends it (printable ASCII)."
    ),
    size: int | None = typer.Option(None, "--size", min=8, help="The model's input side."),
    preprocess: str = typer.Option("auto", "--preprocess", help="As camlens explain."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1..."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest upload."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow a pickled model."),
    seed: int = typer.Option(
        0, "--seed", min=0, help="Random weights (--weights none) from this seed, as explain's."
    ),
) -> None:
    """Serve the explorer: upload an image, click a class, compare methods and layers.

    Example: camlens serve --model torchvision:resnet50 --run out/
    """
    import camlens
    from camlens.serve.launch import Settings, launch

    settings = Settings(
        model, weights, labels, run, host, port, token, size, preprocess, device, seed
    )
    try:
        launch(
            settings,
            max_bytes=int(max_upload_mb * 1024 * 1024),
            trust_pickle=trust_pickle,
            echo=lambda text: typer.echo(text, err=True),
        )
    except camlens.CamlensError as error:
        usage_error(str(error))
