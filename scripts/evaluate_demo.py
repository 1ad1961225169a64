"""Pointing game of every registered method on the bundled demo model.

    python scripts/evaluate_demo.py [--n 500] [--seed 100] [--model demo]

Draws ``n`` fresh cluttered digits from the held-out "test" digits (a seed the training never
used), explains each image's ground-truth class with every method in ``camlens.methods()``, and
counts a hit when the map's maximum lies inside the digit's box (both corners inclusive; Zhang et
al. 2018, "Top-down neural attention by excitation backprop"). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import torch

import camlens
from camlens.datasets import cluttered_digits


def pointing_hits(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(B,) bool: whether the (first) maximum of each map (B, H, W) lies in its box (B, 4)."""
    width = maps.shape[2]
    index = maps.flatten(1).argmax(dim=1)
    y, x = index // width, index % width
    x0, y0, x1, y1 = boxes.unbind(1)
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=None, help="comma-separated (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = camlens.load_model(args.model)
    images, labels, boxes = cluttered_digits(
        args.n, size=model.input_size[0], seed=args.seed, digits="test"
    )
    with torch.no_grad():
        predicted = torch.cat([model(x).argmax(1) for x in images.split(args.batch_size)])
    accuracy = float((predicted == labels).float().mean())
    print(f"{args.n} held-out cluttered digits (seed {args.seed}); model accuracy {accuracy:.4f}")
    print()
    print("| method | pointing game (ground-truth class) | seconds |")
    print("|---|---|---|")
    names = args.methods.split(",") if args.methods else camlens.methods()
    for name in names:
        started = time.perf_counter()
        hits = []
        for x, y, b in zip(
            images.split(args.batch_size), labels.split(args.batch_size),
            boxes.split(args.batch_size),
        ):  # fmt: skip
            exp = camlens.explain(model, x, method=name, target=y.tolist())
            hits.append(pointing_hits(exp.maps, b))
        rate = float(torch.cat(hits).float().mean())
        print(f"| `{name}` | {rate:.3f} | {time.perf_counter() - started:.1f} |")


if __name__ == "__main__":
    main()
