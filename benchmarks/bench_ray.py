"""Images/s of ``camlens explain`` with the Ray engine (1 and 2 actors) against the local engine.

The same generated 640x480 JPEGs, torchvision ResNet-18 with random weights at 224, Grad-CAM,
JPEG overlays, in one process: Ray is started once on this machine's cores before the clock
starts; each Ray run's time includes creating its actors (each imports torch and builds the
model), which is what a user waits for; "first batch" is when the first batch's rows were
written, "images/s after it" the rate from there to the end. Checks that every run wrote one row
per image. Then the driver's side of each Ray run: bytes received and CPU seconds per image, an
actor's images/s (on its batches), and how many such actors one driver could feed.

Run: ``python benchmarks/bench_ray.py [--images 200] [--batch 16] [--gpus-per-worker 0]``
(``--gpus-per-worker 1 --workers 1,2,...``: one actor per GPU on a GPU machine).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import camlens
from camlens.runs import distributed
from camlens.runs.local import RunSettings, explain_files
from camlens.runs.session import Session

SPEC = {"spec": "torchvision:resnet18", "weights": "none", "size": 224}


def make_images(folder: Path, count: int) -> None:
    """``count`` seeded 640x480 JPEGs: smooth colour fields with noise (photo-like sizes)."""
    generator = np.random.default_rng(0)
    y, x = np.mgrid[0:480, 0:640] / 640.0
    for i in range(count):
        a, b, c = generator.uniform(0, 6, size=3)
        base = np.stack([np.sin(a * x + b * y), np.cos(b * x - c * y), np.sin(c * x * y + a)], -1)
        noise = generator.normal(0, 0.15, size=base.shape)
        pixels = ((base + noise) * 0.5 + 0.5).clip(0, 1) * 255
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", default="1,2", help="actor counts to time")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    device = "cuda" if args.gpus_per_worker else "cpu"
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "images").mkdir()
        make_images(root / "images", args.images)
        settings = RunSettings(["gradcam"], batch_size=args.batch)
        torch.manual_seed(0)
        session = Session.from_spec(**SPEC, device=device)
        distributed.start(num_cpus=cores)
        results = []
        traffic: list[tuple[int, dict]] = []
        first: list[float] = []

        def advance(count: int) -> None:  # when the first batch is written
            if len(first) == len(results):
                first.append(time.perf_counter())

        begin = time.perf_counter()
        summary = explain_files(
            session, [root / "images"], root / "local", settings, echo=print, advance=advance
        )
        results.append((f"local engine ({torch.get_num_threads()} torch threads)", summary, begin))
        driver = Session.from_spec(**SPEC, device="cpu")
        for count in (int(n) for n in args.workers.split(",")):
            # a CPU is left to the decoding tasks that feed the actors
            cpus = 1.0 if args.gpus_per_worker else max(1.0, (cores - 1) / count)
            cluster = distributed.Cluster(
                None, count, args.gpus_per_worker, cpus_per_worker=cpus, device=device
            )
            begin = time.perf_counter()
            summary = distributed.explain_files(
                driver, SPEC, [root / "images"], root / f"ray{count}", settings, cluster,
                echo=print, advance=advance,
            )  # fmt: skip
            what = f"{args.gpus_per_worker:g} GPU" if args.gpus_per_worker else f"{cpus:g} CPU"
            results.append((f"ray, {count} actor(s) x {what}", summary, begin))
            traffic.append((count, summary.engine))
        for name in ["local", *(f"ray{n}" for n in args.workers.split(","))]:
            assert len(camlens.load_run(root / name)) == args.images, name
    print(f"\n{args.images} images 640x480, resnet18 (random) at 224, gradcam, batch {args.batch}, "
          f"{cores} cores, device {device}\n")  # fmt: skip
    print("| engine | seconds | images/s | first batch s | images/s after it "
          "| s/image: decode | model | render |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for (name, summary, begin), seen in zip(results, first):
        per = [float(summary.rows[c].mean()) for c in ("load_s", "explain_s", "render_s")]
        after = (args.images - args.batch) / (begin + summary.seconds - seen)
        print(f"| {name} | {summary.seconds:.1f} | {args.images / summary.seconds:.2f} | "
              f"{seen - begin:.1f} | {after:.2f} | "
              + " | ".join(f"{v:.3f}" for v in per) + " |")  # fmt: skip

    driver_table(traffic)


def driver_table(traffic: list[tuple[int, dict]]) -> None:
    """The driver's cost per image against an actor's rate, and the cluster size at which the
    driver would saturate: actors = (1 / driver CPU s per image) / (images/s per actor)."""
    print("\n| actors | driver bytes/image | driver CPU ms/image | images/s per actor "
          "| actors one driver carries |")  # fmt: skip
    print("|---|---|---|---|---|")
    for count, seen in traffic:
        images = max(seen["images"], 1)
        per_actor = images / max(seen["actor_s"], 1e-9)
        cpu = seen["driver_cpu_s"] / images
        print(f"| {count} | {seen['bytes'] / images:.0f} | {cpu * 1000:.1f} | {per_actor:.2f} | "
              f"{1 / cpu / per_actor:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
