"""camlens on a GPU, in one command: a smoke test and the figures docs/benchmarks.md asks for.

On a CUDA device (random weights, fixed seed) it measures:

- Grad-CAM images/s at batch 64 on ResNet-50 (224x224, ``layer4``): camlens, pytorch-grad-cam
  (``pytorch_grad_cam.GradCAM``) and the model alone (the forward pass and the gradient of the
  predicted logit with respect to ``layer4``'s output, the least any Grad-CAM costs);
- Score-CAM, seconds per image (one image; camlens batches the 2,048 masked forwards itself);
- the pipeline: ``camlens explain`` on N generated 640x480 JPEG photos (``--batch-size auto``,
  the process's start-up included) in images/s, with the GPU's utilisation sampled every 200 ms
  (``nvidia-smi``, else ``torch.cuda.utilization()``): mean and median while it ran.

It prints a Markdown table headed with the card's name (``torch.cuda.get_device_name()``).
Without CUDA it exits with a message (status 2); ``--device cpu --quick`` runs every step small
on the CPU, so the script is checked before it meets a GPU.

Run: ``python benchmarks/gpu_smoke.py`` (``--quick`` for a check at small sizes;
``--images 3000`` for the pipeline on 3,000 photos).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

NO_CUDA = (
    "gpu_smoke: torch sees no CUDA GPU here (torch.cuda.is_available() is False); run it on a "
    "machine with one, or check the script on the CPU with --device cpu --quick"
)


def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a check only)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a check, not figures")
    parser.add_argument(
        "--model", default=None, help="torchvision name (resnet50; quick: resnet18)"
    )
    parser.add_argument("--batch", type=int, default=None, help="Grad-CAM batch (64; quick: 4)")
    parser.add_argument("--size", type=int, default=None, help="input side (224; quick: 64)")
    parser.add_argument("--images", type=int, default=None, help="pipeline photos (300; quick: 8)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (5; quick: 1)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.model = args.model or ("resnet18" if quick else "resnet50")
    args.batch = args.batch or (4 if quick else 64)
    args.size = args.size or (64 if quick else 224)
    args.images = args.images or (8 if quick else 300)
    args.repeats = args.repeats or (1 if quick else 5)
    return args


def check_device(name: str) -> torch.device:
    """The device to measure on; exit with :data:`NO_CUDA` (status 2) when CUDA is asked for and
    absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        raise SystemExit(2)
    if device.type not in ("cuda", "cpu"):
        raise SystemExit(f"gpu_smoke: --device {name}: expected cuda, cuda:N or cpu")
    return device


def card(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (a check only)"


def per_second(fn: Callable[[], object], count: int, device: torch.device, repeats: int) -> float:
    """``count`` / the median seconds of ``fn()`` (one warm-up call; the device synchronised)."""

    def synced() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    synced()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        synced()
        times.append(time.perf_counter() - start)
    return count / statistics.median(times)


def gradcam_rows(args: argparse.Namespace, device: torch.device) -> list[tuple[str, str]]:
    """Grad-CAM images/s: the model alone, camlens, pytorch-grad-cam; Score-CAM s per image."""
    import torchvision
    from pytorch_grad_cam import GradCAM as ReferenceGradCAM

    import camlens

    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, weights=None).eval().to(device)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    body = torch.nn.Sequential(*list(model.children())[:-2])

    def alone() -> None:
        with torch.no_grad():  # no graph below layer4: only the head is differentiated
            features = body(x)
        features.requires_grad_(True)
        logits = model.fc(model.avgpool(features).flatten(1))
        torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), features)

    ours = camlens.GradCAM(model, layer="layer4")
    reference = ReferenceGradCAM(model=model, target_layers=[model.layer4])
    n, r = args.batch, args.repeats
    rates = {
        "model alone (forward, gradient to layer4)": per_second(alone, n, device, r),
        "camlens GradCAM": per_second(lambda: ours(x), n, device, r),
        "pytorch-grad-cam GradCAM": per_second(
            lambda: reference(input_tensor=x, targets=None), n, device, r
        ),
    }
    floor = rates["model alone (forward, gradient to layer4)"]
    rows = [
        (f"Grad-CAM {name}, batch {n}, images/s", f"{rate:.1f} ({rate / floor:.2f}x the model)")
        for name, rate in rates.items()
    ]
    score = camlens.ScoreCAM(model, layer="layer4")
    one = x[:1]
    seconds = 1.0 / per_second(lambda: score(one), 1, device, max(1, r // 2))
    rows.append(("Score-CAM, one image, s", f"{seconds:.3f}"))
    return rows


class Utilisation:
    """The GPU's utilisation (%) sampled every 200 ms while the block runs: ``nvidia-smi -lms
    200``, else ``torch.cuda.utilization()`` polled; no samples off CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.samples = device, []
        self.process: subprocess.Popen | None = None
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Utilisation:
        if self.device.type != "cuda":
            return self
        index = self.device.index or 0
        if shutil.which("nvidia-smi"):
            command = ["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu",
                       "--format=csv,noheader,nounits", "-lms", "200"]  # fmt: skip
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
        else:
            self.thread = threading.Thread(target=self._poll, args=(index,), daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip().isdigit():
                self.samples.append(float(line))

    def _poll(self, index: int) -> None:
        while not self.done.wait(0.2):
            try:
                self.samples.append(float(torch.cuda.utilization(index)))
            except Exception:  # noqa: BLE001  (no pynvml: no samples)
                return

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
        if self.thread is not None:
            self.thread.join(timeout=2)

    def summary(self) -> str:
        if not self.samples:
            return "n/a (no GPU, or no nvidia-smi and no pynvml)"
        mean, median = statistics.mean(self.samples), statistics.median(self.samples)
        return f"mean {mean:.0f} %, median {median:.0f} % ({len(self.samples)} samples)"


def pipeline_rows(args: argparse.Namespace, device: torch.device) -> list[tuple[str, str]]:
    """``camlens explain`` on ``args.images`` generated photos: images/s and GPU utilisation."""
    from bench_pipeline import make_images

    root = Path(tempfile.mkdtemp(prefix="camlens-gpu-smoke-"))
    try:
        folder, out = root / "photos", root / "out"
        make_images(folder, args.images)
        command = [sys.executable, "-m", "camlens", "explain", str(folder), "--model",
                   f"torchvision:{args.model}", "--weights", "none", "--method", "gradcam",
                   "--size", str(args.size), "--device", str(device), "-q",
                   "--out", str(out)]  # fmt: skip
        with Utilisation(device) as busy:
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"gpu_smoke: camlens explain failed:\n{done.stderr[-3000:]}")
        import camlens

        rows = camlens.load_run(out).results
        assert len(rows) == args.images and rows["map"].is_unique, "the run is incomplete"
        return [
            (f"camlens explain, {args.images} JPEGs 640x480, images/s (start-up included)",
             f"{args.images / seconds:.1f} ({seconds:.1f} s)"),
            ("GPU utilisation during camlens explain", busy.summary()),
        ]  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = options(argv)
    device = check_device(args.device)
    rows = [("card", card(device)), ("torch", torch.__version__)]
    rows += gradcam_rows(args, device)
    rows += pipeline_rows(args, device)
    print(f"\n### {card(device)}: {args.model}, {args.size}x{args.size}\n")
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
