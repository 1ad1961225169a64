"""``camlens train``: fine-tune a GAP + Linear classifier on an image folder, write a checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from camlens.cli import app, options
from camlens.cli.errors import guarded


@app.command()
@guarded
def train(
    data_dir: Path = typer.Argument(..., help="Image folder: one sub-folder per class."),
    out: Path = typer.Option(..., "--out", help="Checkpoint folder to write."),
    backbone: str = typer.Option(
        "resnet18", "--backbone", help="torchvision name, timm:NAME or camlens:smallcnn."
    ),
    weights: str = typer.Option(
        "DEFAULT", "--weights", help="DEFAULT (pretrained, downloaded), a weights file, or none."
    ),
    freeze: bool = typer.Option(
        False, "--freeze", help="Train the new head only (default: fine-tune everything)."
    ),
    epochs: int = typer.Option(10, "--epochs"),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (one-cycle schedule)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    image_size: int = typer.Option(224, "--image-size", help="Square input side in pixels."),
    augment: bool = typer.Option(
        True, "--augment/--no-augment", help="Random resized crop (and flip) while training."
    ),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="Random horizontal flips."),
    balanced: bool = typer.Option(
        False, "--balanced", help="Weight the loss by inverse class frequency."
    ),
    val_split: float = typer.Option(
        0.2, "--val-split", help="Held-out fraction per class when there is no train/ val/."
    ),
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(0, "--workers", help="Data-loading processes."),
    device: options.Device = "auto",
) -> None:
    """Train a CAM-ready classifier on DATA_DIR and write a checkpoint to OUT.

    Example: camlens train xrays/ --backbone resnet18 --freeze --out xray-model
    """
    from camlens.models.training import train as run

    run(
        data_dir,
        out,
        backbone=backbone,
        weights=weights,
        freeze=freeze,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        image_size=image_size,
        augmentation=augment,
        flip=flip,
        balanced=balanced,
        val_split=val_split,
        seed=seed,
        workers=workers,
        device=device,
        progress=True,
    )
