"""Occlusion on torchvision ResNet-18 (random weights): camlens against Captum's ``Occlusion``.

Same model, batch, targets, window, stride and baseline, interleaved in one process, the
attributions checked against Captum's. Cases: Captum with its default
``perturbations_per_eval=1`` and with ``rows / batch`` (its best: as many copies per forward as
camlens); camlens in fp32 (exact), bf16 and int8; and the floor, the same number of plain
``torch.inference_mode`` forwards of the model at ``rows`` images per forward (what any
one-forward-per-window occlusion must pay). Prints the medians and the ratios.
Run: ``python benchmarks/bench_occlusion.py [--quick] [--size 224] [--window 32] [--stride 16]
[--device cpu]`` (``--quick``: 112 px, one repeat).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved  # noqa: E402

import camlens  # noqa: E402
from camlens.backends.quantize import int8_supported  # noqa: E402


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--rows", type=int, default=32, help="occluded copies per forward")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="112 px, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.size, args.repeats = 112, 1
    return args


def main() -> None:
    args = arguments()
    from captum.attr import Occlusion as CaptumOcclusion

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = torchvision.models.resnet18().eval().to(device)
    shape = (args.batch, 3, args.size, args.size)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        targets = model(x).argmax(1)
    captum = CaptumOcclusion(model)
    options = {"window": args.window, "stride": args.stride, "batch_size": args.rows}
    precisions = ["fp32", "bf16"] + (["int8"] if int8_supported() else [])
    ours = {p: camlens.Occlusion(model, precision=p, **options) for p in precisions}
    positions = (math.ceil((args.size - args.window) / args.stride) + 1) ** 2
    forwards = math.ceil(args.batch * positions / args.rows)
    copies = x[:1].expand(args.rows, -1, -1, -1).contiguous(memory_format=torch.channels_last)

    def floor():
        with torch.inference_mode():
            for _ in range(forwards):
                model(copies)

    def run_captum(per_eval: int):
        with torch.no_grad():
            return captum.attribute(
                x,
                sliding_window_shapes=(3, args.window, args.window),
                strides=args.stride,
                baselines=0.0,
                target=targets,
                perturbations_per_eval=per_eval,
            ).cpu()

    reference = run_captum(args.rows // args.batch)
    runs = {f"camlens {p}": (lambda m=m: m(x, target=targets.tolist())) for p, m in ours.items()}
    for name, run in runs.items():
        got = run().extra["attribution"]
        diff = float((got - reference).abs().max() / reference.abs().max())
        print(f"{name}: max |camlens - captum| / max |captum| = {diff:.2e}")
    runs["captum, perturbations_per_eval=1 (default)"] = lambda: run_captum(1)
    runs[f"captum, perturbations_per_eval={args.rows // args.batch}"] = lambda: run_captum(
        args.rows // args.batch
    )
    runs[f"floor: {forwards} inference forwards of {args.rows}"] = floor
    medians = interleaved(runs, repeats=args.repeats)
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"batch {args.batch}, {args.size} px, window {args.window}, stride {args.stride}, "
        f"{positions} windows, {args.rows} copies per forward"
    )
    slow, best = (medians[name] for name in list(runs)[-3:-1])
    print("| case | median s/call | Captum default / case | Captum best / case |")
    print("|---|---:|---:|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.3f} | {slow / seconds:.2f}x | {best / seconds:.2f}x |")


if __name__ == "__main__":
    main()
