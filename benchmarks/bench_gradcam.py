"""Grad-CAM on torchvision ResNet-50 (random weights), batch 8 at 224x224, on the CPU.

Compares camlens with pytorch-grad-cam's GradCAM, TorchCAM's GradCAM and the floor (one forward
pass with grad + ``autograd.grad`` to the layer), in one process, interleaved, same targets, and
checks the outputs agree. Run: ``python benchmarks/bench_gradcam.py [--repeats 5] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, table  # noqa: E402

import camlens  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from pytorch_grad_cam import GradCAM as PGCGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAM as TorchCAMGradCAM

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = torchvision.models.resnet50().eval().to(device)
    x = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    targets = model(x).argmax(1).tolist()

    ours = camlens.GradCAM(model, layer="layer4")
    pgc = PGCGradCAM(model=model, target_layers=[model.layer4])
    pgc_targets = [ClassifierOutputTarget(t) for t in targets]

    def run_camlens():
        return ours(x, target=targets).maps

    def run_pgc():
        return torch.from_numpy(pgc(input_tensor=x, targets=pgc_targets))

    def run_torchcam():
        extractor = TorchCAMGradCAM(model, target_layer="layer4")
        scores = model(x)
        maps = extractor(class_idx=targets, scores=scores)[0]
        extractor.remove_hooks()
        return F.interpolate(maps[:, None], size=(224, 224), mode="bilinear")[:, 0].detach()

    def run_floor():
        kept = {}
        handle = model.layer4.register_forward_hook(lambda m, a, o: kept.setdefault("a", o))
        try:
            logits = model(x)
        finally:
            handle.remove()
        score = logits.gather(1, torch.tensor(targets, device=device)[:, None]).sum()
        return torch.autograd.grad(score, kept["a"])[0]

    diff_pgc = (run_camlens() - run_pgc()).abs().max().item()
    diff_tc = (run_camlens() - camlens.minmax(run_torchcam().cpu())).abs().max().item()
    medians = interleaved(
        {
            "camlens": run_camlens,
            "pytorch-grad-cam": run_pgc,
            "torchcam": run_torchcam,
            "floor (forward + autograd.grad)": run_floor,
        },
        repeats=args.repeats,
    )
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"batch {args.batch}"
    )
    print(
        f"max |camlens - pytorch-grad-cam| = {diff_pgc:.2e}; max |camlens - torchcam| = "
        f"{diff_tc:.2e}"
    )
    print(table(medians, "camlens"))
    floor = medians["floor (forward + autograd.grad)"]
    print(f"camlens / floor = {medians['camlens'] / floor:.3f}")


if __name__ == "__main__":
    main()
