"""Deletion + insertion (camlens.metrics) against Quantus' PixelFlipping on the same maps.

ResNet-18 with random weights (fixed seed), Grad-CAM maps, CPU. Quantus flips features of the
(C, H, W) input in steps of ``features_in_step`` = C * H * W / steps, which with a map repeated
over channels is the same pixel deletion to a zero baseline (Quantus' check that
features_in_step divides H * W is switched off: 3 * 224 features do not divide 224 * 224).
Prints the wall times and the largest difference between Quantus' and camlens's deletion
curves.

    python benchmarks/bench_metrics.py --images 8 --steps 224 --size 224 --threads 2

camlens runs with each of ``--precisions`` (default fp32,int8); int8's AUCs and curves are
compared with fp32's.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torchvision

import camlens
from camlens import metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=224)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", default="fp32,int8", help="camlens precisions to run")
    parser.add_argument("--skip-quantus", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = torchvision.models.resnet18(num_classes=1000).eval().to(device)
    x = torch.randn(
        args.images, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)
    )
    exp = camlens.explain(model, x.to(device), method="gradcam")
    # a tiny jitter makes the ranking unique, so both libraries remove the same pixels
    jitter = torch.rand(exp.maps.shape, generator=torch.Generator().manual_seed(2)) * 1e-6
    maps, classes = exp.maps + jitter, exp.targets
    print(
        f"resnet18, {args.images} images {args.size}x{args.size}, {args.steps} steps, "
        f"{args.threads} threads, device {device}"
    )

    runs = {}
    for precision in args.precisions.split(","):
        options = {"steps": args.steps, "batch_size": args.batch_size, "precision": precision}
        begin = time.perf_counter()
        deleted, del_curves = metrics.deletion(model, x, maps, return_curves=True, **options)
        middle = time.perf_counter()
        inserted, ins_curves = metrics.insertion(model, x, maps, return_curves=True, **options)
        if device.type == "cuda":
            torch.cuda.synchronize()
        end = time.perf_counter()
        runs[precision] = (middle - begin, end - begin, del_curves, ins_curves)
        name = f"camlens {precision}"
        print(f"{name} deletion:  {middle - begin:8.2f} s  (mean AUC {deleted.mean():.5f})")
        print(f"{name} insertion: {end - middle:8.2f} s  (mean AUC {inserted.mean():.5f})")
        print(f"{name} deletion + insertion: {end - begin:8.2f} s")
    if "fp32" in runs:
        exact = runs["fp32"]
        for precision, (_, _, del_curves, ins_curves) in runs.items():
            if precision != "fp32":
                gaps = [
                    float((metrics.auc(a) - metrics.auc(b)).abs().max())
                    for a, b in ((del_curves, exact[2]), (ins_curves, exact[3]))
                ]
                curve = max(
                    float((del_curves - exact[2]).abs().max()),
                    float((ins_curves - exact[3]).abs().max()),
                )
                print(
                    f"camlens {precision} against fp32: max |AUC diff| deletion {gaps[0]:.2e}, "
                    f"insertion {gaps[1]:.2e}; max |curve diff| {curve:.2e}"
                )
    if args.skip_quantus:
        return

    import quantus
    from quantus.helpers import asserts

    # Quantus asserts that features_in_step divides H * W, although it flips features of the
    # whole (C, H, W) input: 3 * 224 features per step is 224 pixels per step, 224 steps.
    asserts.assert_features_in_step = lambda **kwargs: None
    features = 3 * args.size * args.size
    metric = quantus.PixelFlipping(
        features_in_step=features // args.steps,
        perturb_baseline=0.0,
        normalise=False,
        abs=False,
        disable_warnings=True,
    )
    a_batch = maps.numpy()[:, None]
    start = time.perf_counter()
    curves = metric(
        model=model,
        x_batch=x.numpy(),
        y_batch=classes.numpy(),
        a_batch=a_batch,
        channel_first=True,
        softmax=True,
        device=str(device),
        batch_size=args.images,
    )
    quantus_time = time.perf_counter() - start
    curves = np.asarray(curves)
    print(f"quantus PixelFlipping:        {quantus_time:8.2f} s  ({curves.shape[1]} points)")
    for precision, (deletion_time, both_time, del_curves, _) in runs.items():
        difference = np.abs(curves - del_curves[:, 1:].numpy()).max()
        print(
            f"camlens {precision}: largest deletion-curve difference from Quantus (steps 1..S) "
            f"{difference:.2e}; speed-up {quantus_time / deletion_time:6.2f}x deletion only, "
            f"{quantus_time / both_time:6.2f}x deletion + insertion"
        )


if __name__ == "__main__":
    main()
