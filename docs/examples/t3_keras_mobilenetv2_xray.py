"""Tutorial T3: Keras MobileNetV2 on bone X-rays (MURA), class activation map.

The tutorial builds ``MobileNetV2(weights=None, include_top=False)``, takes ``layers[-3].output``
(that is ``Conv_1``, the last 1x1 convolution, 1280 maps, before its batch norm and ReLU), adds
``GlobalAveragePooling2D`` and ``Dense(2, softmax, kernel_initializer="uniform")``, trains on
grayscale X-rays stacked to 3 channels, and shows the CAM over the X-ray only where it is at least
0.2, written as a JPEG. camlens: ``explain(method="cam")`` then ``overlay(threshold=0.2)``.
CLI on a saved model: ``camlens explain xray.png --model t3.keras --method cam --threshold 0.2
--out out/``. Run: ``python docs/examples/t3_keras_mobilenetv2_xray.py normal.png abnormal.png``.
"""

from __future__ import annotations

import sys

import keras
import numpy as np
from PIL import Image

import camlens


def build(size: int = 224) -> keras.Model:
    base = keras.applications.MobileNetV2(
        weights=None, include_top=False, alpha=1, input_shape=(size, size, 3)
    )
    features = keras.layers.GlobalAveragePooling2D()(base.layers[-3].output)  # Conv_1
    outputs = keras.layers.Dense(2, activation="softmax", kernel_initializer="uniform")(features)
    model = keras.Model(base.input, outputs)
    model.compile("adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def main(xrays: np.ndarray, labels: np.ndarray, epochs: int = 1, out: str = "t3_cam.jpg"):
    """``xrays``: uint8 grayscale (N, S, S); ``labels``: (N,) 0 = normal, 1 = abnormal."""
    images = np.repeat(xrays[..., None], 3, axis=-1)  # grayscale stacked to 3 channels
    x = keras.applications.mobilenet_v2.preprocess_input(images.astype("float32"))
    model = build(xrays.shape[1])
    model.fit(x, np.eye(2)[labels], epochs=epochs, batch_size=16, verbose=0)
    exp = camlens.explain(model, x[:1], method="cam")  # layer="auto" finds Conv_1
    picture = camlens.overlay(images[0], exp.maps[0], alpha=0.5, threshold=0.2)
    Image.fromarray(picture).save(out, quality=95)
    return exp, picture


if __name__ == "__main__":
    paths = sys.argv[1:]
    gray = np.stack([np.asarray(Image.open(p).convert("L").resize((224, 224))) for p in paths])
    print(main(gray, np.arange(len(paths)) % 2)[0])
