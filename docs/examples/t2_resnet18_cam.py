"""Tutorial T2: CAM of a torchvision ResNet-18 for class 282 ("tiger cat").

The tutorial hooks ``layer4`` (512 x 7 x 7), multiplies by ``fc.weight[282]``, sums over channels,
upsamples bilinearly to 224 x 224 and shows it with ``alpha=0.5, cmap="jet"`` over the centre crop.
In camlens that is three calls. Run: ``python docs/examples/t2_resnet18_cam.py cat.jpg``.
"""

from __future__ import annotations

import sys

import torchvision
from PIL import Image

import camlens


def main(image: str, weights: str | None = "DEFAULT", out: str = "t2_cam.png"):
    model = torchvision.models.resnet18(weights=weights).eval()
    x, crops = camlens.load_images([image])  # resize 256, centre crop 224, ImageNet mean/std
    exp = camlens.explain(model, x, method="cam", target=282)  # layer="auto" finds layer4
    Image.fromarray(camlens.overlay(crops[0], exp.maps[0], colormap="jet", alpha=0.5)).save(out)
    return exp


if __name__ == "__main__":
    print(main(sys.argv[1]))
