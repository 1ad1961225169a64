"""Tutorial T1: Keras ResNet50 on cats vs dogs, class activation map.

The tutorial nests ``ResNet50(include_top=False)`` in a ``Sequential`` with
``GlobalAveragePooling2D`` and ``Dense(2, softmax)``, freezes the base, trains one epoch (Adam 0.02,
binary cross-entropy), then sums the base's 2048 feature maps weighted by the Dense kernel column
of the predicted class, min-max scales, resizes bicubically and shows overlay | image | CAM.
camlens finds the nested layer (``"resnet50/conv5_block3_out"``) and the kernel column itself.
CLI on a saved model: ``camlens explain cat.jpg --model t1.keras --method cam --out out/``.
Run: ``python docs/examples/t1_keras_resnet50_cats_dogs.py cat.jpg dog.jpg``.
"""

from __future__ import annotations

import sys

import keras
import numpy as np

import camlens
from camlens.render import panel


def build(weights: str | None = "imagenet", size: int = 224) -> keras.Model:
    base = keras.applications.ResNet50(
        include_top=False, weights=weights, input_shape=(size, size, 3)
    )
    base.trainable = False  # the tutorial trains the new head only
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(0.02), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def main(
    images: np.ndarray,
    labels: np.ndarray,
    weights: str | None = "imagenet",
    out: str = "t1_cam.png",
):
    """``images``: uint8 (N, S, S, 3) photos; ``labels``: (N,) 0 = cat, 1 = dog."""
    model = build(weights, images.shape[1])
    x = keras.applications.resnet50.preprocess_input(images.astype("float32"))
    model.fit(x, np.eye(2)[labels], epochs=1, batch_size=32, verbose=0)
    # the predicted class; relu=False: the tutorial min-max scales the signed map
    exp = camlens.explain(model, x[:1], method="cam", upsample="bicubic", relu=False)
    blended = camlens.overlay(images[0], exp.maps[0], colormap="jet", alpha=0.5)
    panel(images[0], [("CAM", exp.maps[0], blended)], out)  # image | CAM | overlay
    return model, x, exp


if __name__ == "__main__":
    from PIL import Image

    photos = np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((224, 224))) for p in sys.argv[1:]]
    )
    print(main(photos, np.array([0 if "cat" in p else 1 for p in sys.argv[1:]]))[2])
