"""How far each library's Grad-CAM++ is from the paper's Eq. 19 (float64 reference).

ResNet-50 with random weights (seed 0), batch 4 at 224x224, predicted classes. Prints the max
absolute difference of the normalised 224x224 maps from the reference, and the typical gradient
magnitude. Run: ``python benchmarks/compare_gradcampp.py``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

import camlens


def reference(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    a, g = a.double(), g.double()
    den = 2 * g**2 + a.sum(dim=(2, 3), keepdim=True) * g**3
    alpha = torch.where((g != 0) & (den != 0), g**2 / torch.where(den != 0, den, 1), 0)
    weights = (alpha * g.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
    raw = (weights * a).sum(dim=1)
    up = F.interpolate(raw.clamp_min(0)[:, None], size=(224, 224), mode="bilinear")[:, 0]
    return camlens.minmax(up).float()


def main() -> None:
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAMpp

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    capture = camlens.backends.adapter_for(model).capture(x, ["layer4"], None)
    targets = capture.target.indices.tolist()
    expected = reference(capture.activations[0], capture.gradients[0])
    ours = camlens.explain(model, x, method="gradcam++", target=targets).maps
    with GradCAMPlusPlus(model=model, target_layers=[model.layer4]) as cam:
        pgc = torch.from_numpy(cam(x, targets=[ClassifierOutputTarget(t) for t in targets]))
    extractor = GradCAMpp(model, target_layer="layer4")
    tc = extractor(class_idx=targets, scores=model(x))[0].detach()
    extractor.remove_hooks()
    tc = camlens.minmax(F.interpolate(tc[:, None], size=(224, 224), mode="bilinear")[:, 0])
    g = capture.gradients[0].abs()
    print(f"median |g| = {g.median():.2e}, max |g| = {g.max():.2e}")
    for name, maps in (("camlens", ours), ("pytorch-grad-cam", pgc), ("torchcam", tc)):
        print(f"{name:>17}: max |map - Eq.19 float64| = {(maps - expected).abs().max():.2e}")
    np.set_printoptions(precision=3)


if __name__ == "__main__":
    main()
