"""bf16 autocast against float32: map agreement and time of every method with ``autocasts``.

Random weights (fixed seeds, random batch-norm statistics), a batch of 2 at 64 px, targets
[3, 7], on ResNet-50, DenseNet-121, a two-stage ConvNeXt and a small ViT, built as
tests/methods/test_bf16.py builds them. For each method and network: the correlation and largest
difference of the maps at ``precision="bf16"`` against ``precision="fp32"``, and each
precision's seconds per call (one timed call after a warm-up: rough on a loaded machine). The
bound of tests/methods/test_bf16.py is correlation >= 0.99 and max difference <= 0.05.

    PYTHONPATH=src python benchmarks/bench_bf16.py [--nets resnet50,vit] [--methods gradcam]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from camlens.methods._registry import get
from camlens.methods.precision import agreement

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "methods")]
from test_bf16 import network  # noqa: E402  (the test's networks: one definition)

TARGETS = [3, 7]
#: the methods whose passes run under autocast, with options that keep them cheap
METHODS = {
    "gradcam": {},
    "gradcam++": {},
    "xgradcam": {},
    "hirescam": {},
    "layercam": {},
    "eigengradcam": {},
    "gradcam-elementwise": {},
    "saliency": {},
    "input-x-gradient": {},
    "guided-backprop": {},
    "deconvolution": {},
    "guided-gradcam": {},
    "integrated-gradients": {"steps": 8},
    "smoothgrad": {"samples": 4},
    "gradient-shap": {"n_samples": 4},
}


def run(model: torch.nn.Module, method: str, precision: str, x: torch.Tensor):
    """(maps, seconds of the second call) of ``method`` at ``precision``."""
    explainer = get(method)(model, precision=precision, **METHODS[method])
    explainer(x, target=TARGETS)
    start = time.perf_counter()
    exp = explainer(x, target=TARGETS)
    assert exp.extra["precision"] == precision
    return exp.maps, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="resnet50,densenet121,convnext,vit")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)).clamp(-2, 2)
    print("| network | method | correlation | max difference | fp32 s | bf16 s |")
    print("|---|---|---|---|---|---|")
    for name in args.nets.split(","):
        model = network(name)
        for method in args.methods.split(","):
            exact, fp32_s = run(model, method, "fp32", x)
            rounded, bf16_s = run(model, method, "bf16", x)
            correlation, worst = agreement(exact, rounded)
            print(
                f"| {name} | {method} | {correlation:.4f} | {worst:.4f} | {fp32_s:.3f} | "
                f"{bf16_s:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
