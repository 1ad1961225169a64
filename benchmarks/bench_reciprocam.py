"""Recipro-CAM (camlens) against pytorch-grad-cam's ScoreCAM on the same model and batch.

The issue's claim: Recipro-CAM at least 5x faster than Score-CAM (the paper: about 150x at
ResNet-50's 7x7 ``layer4``: 49 forwards of the head per image against 2048 whole-network
forwards). torchvision ResNet-50 (random weights), batch 2 at 224 px, ``layer4``, interleaved
in one process, with camlens' own ``scorecam`` (fp32, exact) beside pytorch-grad-cam's.
Run: ``python benchmarks/bench_reciprocam.py [--quick] [--repeats 3] [--device cpu]``
(``--quick``: ResNet-18 at 112 px, batch 1, one repeat: 512 Score-CAM forwards, not 4096).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, model_arguments, table  # noqa: E402

import camlens  # noqa: E402


def main() -> None:
    args = model_arguments(device=True)

    from pytorch_grad_cam import ScoreCAM as PGCScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = getattr(torchvision.models, args.model)().eval().to(device)
    shape = (args.batch, 3, args.size, args.size)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(device)
    targets = model(x).argmax(1).tolist()
    ours = camlens.ReciproCAM(model, layer="layer4")
    scorecam = camlens.ScoreCAM(model, layer="layer4", precision="fp32")
    pgc = PGCScoreCAM(model=model, target_layers=[model.layer4])
    pgc.batch_size = 64
    pgc_targets = [ClassifierOutputTarget(t) for t in targets]

    medians = interleaved(
        {
            "camlens": lambda: ours(x, target=targets).maps,
            "pytorch-grad-cam ScoreCAM": lambda: pgc(input_tensor=x, targets=pgc_targets),
            "camlens scorecam (fp32)": lambda: scorecam(x, target=targets).maps,
        },
        repeats=args.repeats,
    )
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"{args.model}, batch {args.batch} at {args.size} px"
    )
    print(table(medians, "camlens"))
    ratio = medians["pytorch-grad-cam ScoreCAM"] / medians["camlens"]
    print(f"Score-CAM (pytorch-grad-cam) / Recipro-CAM (camlens) = {ratio:.1f}x")
    ratio = medians["camlens scorecam (fp32)"] / medians["camlens"]
    print(f"Score-CAM (camlens, fp32) / Recipro-CAM (camlens) = {ratio:.1f}x")


if __name__ == "__main__":
    main()
