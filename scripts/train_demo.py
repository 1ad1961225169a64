"""Train camlens's bundled demo model from scratch, reproducibly.

    python scripts/train_demo.py            # writes src/camlens/data/demo/

1. Writes cluttered handwritten digits (camlens.datasets.cluttered_digits, 64x64) as an image
   folder: ``train/`` from the "train" part of scikit-learn's digits (seed 0), ``val/`` from the
   held-out "test" part (seed 1), so validation never sees a training digit.
2. Runs ``camlens.train`` on it: camlens:smallcnn, random init, fixed seed, deterministic.
3. Copies the checkpoint into the package with 16 sample images (held-out digits, seed 2) and
   their ground-truth boxes (boxes.csv).

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
DEMO = ROOT / "src" / "camlens" / "data" / "demo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=6000, help="training images")
    parser.add_argument("--val", type=int, default=1000, help="validation images")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=0.004)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16, help="smallcnn width")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None, help="keep the image folder here")
    parser.add_argument("--out", type=Path, default=DEMO, help="checkpoint folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

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
        backbone="camlens:smallcnn",
        weights="none",
        backbone_kwargs={"width": args.width},
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        image_size=64,
        augmentation=False,
        seed=args.seed,
    )
    total = time.perf_counter() - started
    print(
        f"validation accuracy {result.report['accuracy']:.4f}; training {result.report['seconds']}"
        f" s, total with the dataset {total:.1f} s"
    )

    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(work, args.out)
    shutil.rmtree(work.parent)
    samples = args.out / "samples"
    x, y, b = cluttered_digits(16, seed=args.seed + 2, digits="test")
    write_image_folder(samples, x, y, b)
    if args.data is None:
        shutil.rmtree(data)
    size = (args.out / "model.safetensors").stat().st_size
    print(f"bundled model written to {args.out} ({size / 1e6:.2f} MB) with 16 samples")


if __name__ == "__main__":
    main()
