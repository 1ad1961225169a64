"""Train camlens's bundled demo model from scratch, reproducibly.

    python scripts/train_demo.py            # writes src/camlens/data/demo/
    python scripts/train_demo.py --backbone smallvit --epochs 15 --lr 0.003   # data/demo-vit/

1. Writes cluttered handwritten digits (camlens.datasets.cluttered_digits, 64x64) as an image
   folder: ``train/`` from the "train" part of scikit-learn's digits (seed 0), ``val/`` from the
   held-out "test" part (seed 1), so validation never sees a training digit.
2. Runs ``camlens.train`` on it: camlens:smallcnn, random init, fixed seed, deterministic.
3. Copies the checkpoint into the package with 16 sample images (held-out digits, seed 2: the
   first of each class, then the next six) and their ground-truth boxes (samples/boxes.csv).
   ``--samples-only`` rewrites just the samples. ``--backbone smallvit`` trains the demo vision
   transformer (camlens:smallvit) into ``data/demo-vit/``, which shares demo's samples.

The same training from the command line (after step 1):
    camlens train DATA --out CKPT --backbone camlens:smallcnn --weights none --image-size 64 \
        --epochs 6 --lr 0.004 --batch-size 64 --no-augment --seed 0
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

import camlens
from camlens.datasets import cluttered_digits, write_image_folder

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "camlens" / "data"
#: the bundled model's folder per backbone (demo-vit reads demo's samples)
FOLDERS = {"smallcnn": DATA / "demo", "smallvit": DATA / "demo-vit"}


def write_samples(folder: Path, seed: int, n: int = 16) -> None:
    """``n`` held-out cluttered digits, every class present, with ``boxes.csv``."""
    x, y, b = cluttered_digits(4 * n, seed=seed, digits="test")
    first = [int((y == digit).nonzero()[0]) for digit in range(10)]
    rest = [i for i in range(len(y)) if i not in first][: n - len(first)]
    chosen = torch.tensor(sorted(first + rest))
    if folder.exists():
        shutil.rmtree(folder)
    write_image_folder(folder, x[chosen], y[chosen], b[chosen])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=5000, help="training images")
    parser.add_argument("--val", type=int, default=1000, help="validation images")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=0.004)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", choices=list(FOLDERS), default="smallcnn")
    parser.add_argument("--width", type=int, default=16, help="smallcnn width")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None, help="keep the image folder here")
    parser.add_argument("--out", type=Path, default=None, help="checkpoint folder")
    parser.add_argument("--samples-only", action="store_true", help="only rewrite the samples")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out = args.out or FOLDERS[args.backbone]
    cnn = args.backbone == "smallcnn"
    if args.samples_only:
        write_samples(args.out / "samples", args.seed + 2)
        return

    started = time.perf_counter()
    data = args.data or Path(tempfile.mkdtemp(prefix="camlens-digits-"))
    x, y, b = cluttered_digits(args.train, seed=args.seed, digits="train")
    write_image_folder(data / "train", x, y, b)
    x, y, b = cluttered_digits(args.val, seed=args.seed + 1, digits="test")
    write_image_folder(data / "val", x, y, b)
    made = time.perf_counter() - started
    print(f"dataset written to {data} in {made:.1f} s")

    work = Path(tempfile.mkdtemp(prefix="camlens-demo-")) / "checkpoint"
    result = camlens.train(
        data,
        work,
        backbone=f"camlens:{args.backbone}",
        weights="none",
        backbone_kwargs={"width": args.width} if cnn else {},
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        image_size=64,
        augmentation=False,
        seed=args.seed,
    )
    total = time.perf_counter() - started
    accuracies = ", ".join(f"{row['val_accuracy']:.3f}" for row in result.history)
    print(f"per-epoch validation accuracy: {accuracies}")
    print(
        f"validation accuracy {result.report['accuracy']:.4f}; training {result.report['seconds']}"
        f" s, total with the dataset {total:.1f} s"
    )

    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(work, args.out)
    shutil.rmtree(work.parent)
    if cnn:
        write_samples(args.out / "samples", args.seed + 2)
    if args.data is None:
        shutil.rmtree(data)
    size = (args.out / "model.safetensors").stat().st_size
    print(f"bundled model written to {args.out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
