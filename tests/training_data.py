"""What the training tests share: a one-epoch CPU recipe and a folder of two-class images."""

from __future__ import annotations

import numpy as np
from PIL import Image

FAST = {
    "backbone": "camlens:smallcnn",
    "weights": "none",
    "backbone_kwargs": {"width": 8},
    "epochs": 1,
    "batch_size": 4,
    "image_size": 32,
    "progress": False,
}


def gray_folder(root, classes=("normal", "abnormal"), per_class=6, size=40):
    """Grayscale PNGs: class 0 bright in the top-left quarter, class 1 in the bottom-right."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = (rng.random((size, size)) * 60).astype(np.uint8)
            half = size // 2
            corner = (slice(0, half), slice(0, half)) if index == 0 else (slice(half, None),) * 2
            image[corner] = 220
            Image.fromarray(image, mode="L").save(root / name / f"{i}.png")
    return root
