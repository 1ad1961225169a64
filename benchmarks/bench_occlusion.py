"""Occlusion on torchvision ResNet-18 (random weights): camlens against Captum's ``Occlusion``.

Same model, batch, targets, window, stride and baseline; both batch their occluded copies
(camlens ``batch_size``, Captum ``perturbations_per_eval``), interleaved in one process, and the
attributions are checked to agree. Prints the medians and camlens' speed-up (the ratio).
Run: ``python benchmarks/bench_occlusion.py [--size 224] [--window 32] [--stride 16]
[--precision fp32] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, table  # noqa: E402

import camlens  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--rows", type=int, default=32, help="occluded copies per forward")
    parser.add_argument("--precision", default="fp32", help="camlens: fp32, bf16 or auto")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from captum.attr import Occlusion as CaptumOcclusion

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = torchvision.models.resnet18().eval().to(device)
    shape = (args.batch, 3, args.size, args.size)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        targets = model(x).argmax(1)

    ours = camlens.Occlusion(
        model,
        window=args.window,
        stride=args.stride,
        batch_size=args.rows,
        precision=args.precision,
    )
    theirs = CaptumOcclusion(model)

    def run_camlens():
        return ours(x, target=targets.tolist()).extra["attribution"]

    def run_captum():
        with torch.no_grad():
            return theirs.attribute(
                x,
                sliding_window_shapes=(3, args.window, args.window),
                strides=args.stride,
                baselines=0.0,
                target=targets,
                perturbations_per_eval=args.rows // args.batch,
            ).cpu()

    reference = run_captum()
    diff = float((run_camlens() - reference).abs().max()) / float(reference.abs().max())
    medians = interleaved({"camlens": run_camlens, "captum": run_captum}, repeats=args.repeats)
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"batch {args.batch}, {args.size} px, window {args.window}, stride {args.stride}, "
        f"{args.rows} copies per forward, camlens precision {args.precision}"
    )
    print(f"max |camlens - captum| / max |captum| = {diff:.2e}")
    print(table(medians, "camlens"))
    print(f"captum / camlens = {medians['captum'] / medians['camlens']:.2f}")


if __name__ == "__main__":
    main()
