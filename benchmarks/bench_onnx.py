"""ONNX Runtime against PyTorch: the same camlens methods on a ResNet and its ONNX export.

torchvision ResNet (random weights, seed 0, eval) exported with ``torch.onnx.export`` (dynamic
batch), explained by camlens on PyTorch and on ONNX Runtime (CPU, float32), interleaved in one
process: ``eigencam`` (one forward) and ``scorecam`` (fp32: one forward per channel of
``layer4``), with the maps checked to agree within 1e-4.
Run: ``python benchmarks/bench_onnx.py [--quick] [--repeats 3]`` (``--quick``: ResNet-18 at
112 px, batch 1, one repeat; default ResNet-50 at 224 px, batch 2).
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import onnxruntime
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, model_arguments  # noqa: E402

import camlens  # noqa: E402


def export(model: torch.nn.Module, size: int, path: Path) -> None:
    """``model`` as an ONNX file for (any batch, 3, size, size) inputs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, size, size),),
            str(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )


def main() -> None:
    args = model_arguments()
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)().eval()
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export(model, args.size, path)
        onnx_model = camlens.load_model(path)
    runs = {}
    for name, network in (("pytorch", model), ("onnxruntime", onnx_model)):
        eigencam = camlens.EigenCAM(network)
        scorecam = camlens.ScoreCAM(network, precision="fp32")
        runs[f"eigencam {name}"] = lambda e=eigencam: e(x).maps
        runs[f"scorecam {name}"] = lambda e=scorecam: e(x).maps
    for method in ("eigencam", "scorecam"):
        gap = (runs[f"{method} pytorch"]() - runs[f"{method} onnxruntime"]()).abs().max()
        assert gap < 1e-4, f"{method}: maps differ by {gap}"
    medians = interleaved(runs, repeats=args.repeats)
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
        f"{onnxruntime.__version__}, {args.model}, batch {args.batch} at {args.size} px"
    )
    print("| method | PyTorch s/call | ONNX Runtime s/call | ONNX Runtime speed-up |")
    print("|---|---|---|---|")
    for method in ("eigencam", "scorecam"):
        ours, theirs = medians[f"{method} onnxruntime"], medians[f"{method} pytorch"]
        print(f"| {method} | {theirs:.3f} | {ours:.3f} | {theirs / ours:.2f}x |")


if __name__ == "__main__":
    main()
