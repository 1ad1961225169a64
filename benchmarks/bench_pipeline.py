"""``camlens explain`` on a folder of photos against the floor: what the model alone costs.

Makes N 640x480 JPEGs (skimage's photos, cropped and tinted so no two are alike), then times,
each as a whole process (imports and model construction included), one after the other:

- floor: decode each JPEG, resize it to 224x224, run the forward pass (no graph below
  ``layer4``) and the gradient of the predicted logit with respect to ``layer4``'s output
  (``autograd.grad`` through the head only), in batches of 16: the least any Grad-CAM can cost;
- camlens: ``camlens explain FOLDER --model torchvision:resnet50 --weights none --method gradcam
  --batch-size 16 --out OUT`` (the defaults: JPEG overlays, maps as PNG, results.parquet, report).

- model alone: the same forwards and gradients on random batches, no file read (the part no
  pipeline can hide), with the model as torchvision makes it and in channels-last memory
  format (as camlens's sessions run a CNN they load);

It prints seconds, camlens / floor, camlens / model alone (both forms), KiB written per image
and method, and each process's peak resident memory. ``--images 300 3000`` runs both sizes to
show memory flat in the number of images.

Run: ``python benchmarks/bench_pipeline.py [--images 300] [--model resnet50] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR = r"""
import sys, time
from pathlib import Path
import numpy as np, torch, torchvision
from PIL import Image
folder, name, batch, device = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
decode = sys.argv[5] == "decode"  # else the model alone, on random batches of the same size
torch.manual_seed(0)
model = torchvision.models.get_model(name, weights=None).eval().to(device)
if sys.argv[5] == "model-channels-last":  # the model alone as camlens's sessions run it
    model = model.to(memory_format=torch.channels_last)
mean = torch.tensor([0.485, 0.456, 0.406], device=device)[:, None, None]
std = torch.tensor([0.229, 0.224, 0.225], device=device)[:, None, None]
body = torch.nn.Sequential(*list(model.children())[:-2])  # a torchvision ResNet up to layer4
files = sorted(folder.glob("*.jpg"))
for start in range(0, len(files), batch):
    images = []
    for path in files[start : start + batch]:
        if not decode:
            images.append(torch.rand(3, 224, 224))
            continue
        with Image.open(path) as im:
            im = im.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
        images.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1))
    x = ((torch.stack(images).to(device)) - mean) / std
    with torch.no_grad():  # no graph below the layer: only the head is differentiated
        features = body(x)
    features.requires_grad_(True)
    logits = model.fc(model.avgpool(features).flatten(1))
    score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    torch.autograd.grad(score, features)
if device.startswith("cuda"):
    torch.cuda.synchronize()
"""


def make_images(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image
    from skimage import data

    photos = [data.chelsea(), data.astronaut(), data.coffee(), data.rocket()]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo = Image.fromarray(photos[i % len(photos)]).resize((700, 520))
        left, top = int(rng.integers(0, 60)), int(rng.integers(0, 40))
        crop = np.asarray(photo.crop((left, top, left + 640, top + 480)), dtype=np.float32)
        tint = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
        pixels = np.clip(crop * tint, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{i:05d}.jpg", quality=90)


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of a child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{command[:4]} failed: {process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def folder_kib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, nargs="+", default=[300])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", help="Keep the images and outputs in this folder.")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="camlens-bench-"))
    print(
        "| images | model alone s | model alone channels-last s | floor s | camlens s "
        "| camlens / floor | camlens / model alone | camlens / model alone channels-last "
        "| KiB per image and method | peak MiB floor | peak MiB camlens |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    try:
        for count in args.images:
            folder = root / f"images-{count}"
            if not folder.is_dir():
                make_images(folder, count)
            out = root / f"out-{count}"
            shutil.rmtree(out, ignore_errors=True)
            floor, model, last = (
                timed(
                    [
                        sys.executable,
                        "-c",
                        FLOOR,
                        str(folder),
                        args.model,
                        str(args.batch),
                        args.device,
                        what,
                    ]
                )  # fmt: skip
                for what in ("decode", "model", "model-channels-last")
            )
            camlens = timed(
                [sys.executable, "-m", "camlens", "explain", str(folder), "--model",
                 f"torchvision:{args.model}", "--weights", "none", "--method", "gradcam",
                 "--batch-size", str(args.batch), "--device", args.device, "-q", "--out", str(out)]
            )  # fmt: skip
            written = folder_kib(out) / count
            print(
                f"| {count} | {model[0]:.1f} | {last[0]:.1f} | {floor[0]:.1f} | {camlens[0]:.1f} "
                f"| {camlens[0] / floor[0]:.2f}x | {camlens[0] / model[0]:.2f}x "
                f"| {camlens[0] / last[0]:.2f}x "
                f"| {written:.0f} | {floor[1]:.0f} | {camlens[1]:.0f} |",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
