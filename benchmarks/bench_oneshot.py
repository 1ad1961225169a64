"""One-shot ``camlens.explain`` calls against a reused explainer, and Score-CAM int8 on one image.

1. Grad-CAM on torchvision ResNet-50 (random weights), batch 8 at 224x224: ``camlens.explain``
   called each time against one ``camlens.GradCAM`` reused (the layer survey is cached per model,
   so the two should cost the same).
2. Score-CAM with ``precision="int8"`` on one 224x224 image with ResNet-18 at torch's default
   threads, called twice on the same model: the first call quantises, the second reuses the int8
   copy; pytorch-grad-cam's ScoreCAM on the same image for reference.

Run: ``python benchmarks/bench_oneshot.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved  # noqa: E402

import camlens  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)

    resnet50 = torchvision.models.resnet50().eval()
    x = torch.randn(8, 3, 224, 224, generator=generator)
    reused = camlens.GradCAM(resnet50)
    medians = interleaved(
        {
            "one-shot camlens.explain": lambda: camlens.explain(resnet50, x, method="gradcam"),
            "reused camlens.GradCAM": lambda: reused(x),
        },
        repeats=args.repeats,
    )
    print("| Grad-CAM, ResNet-50, batch 8 | median s/call |\n|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.3f} |")

    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    resnet18 = torchvision.models.resnet18().eval()
    image = torch.randn(1, 3, 224, 224, generator=generator)
    target = int(resnet18(image).argmax())
    timings = {}
    for call in ("first", "second"):
        start = time.perf_counter()
        camlens.explain(resnet18, image, method="scorecam", precision="int8", target=target)
        timings[f"camlens int8, {call} call"] = time.perf_counter() - start
    with ScoreCAM(model=resnet18, target_layers=[resnet18.layer4]) as cam:
        start = time.perf_counter()
        cam(input_tensor=image, targets=[ClassifierOutputTarget(target)])
        timings["pytorch-grad-cam ScoreCAM"] = time.perf_counter() - start
    reference = timings["pytorch-grad-cam ScoreCAM"]
    print(f"\n| Score-CAM, ResNet-18, 1 image, {torch.get_num_threads()} threads | s "
          "| vs pytorch-grad-cam |\n|---|---|---|")  # fmt: skip
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.2f} | {reference / seconds:.2f}x |")


if __name__ == "__main__":
    main()
