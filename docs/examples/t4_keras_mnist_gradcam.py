"""Tutorial T4: keras-vis Grad-CAM on the Keras MNIST CNN.

The tutorial trains Conv32-MaxPool-Dropout-Conv64-MaxPool-Dropout-Flatten-Dense256-Dense10
(softmax, named ``"visualized_layer"``), swaps the last activation to linear so Grad-CAM sees the
pre-softmax score, and calls ``visualize_cam(model, layer_idx, filter_indices=class,
seed_input=image)`` (its default map is the last pooling layer's); panels: input (gray) | Grad-CAM
(jet) | overlay. camlens explains the pre-softmax logit without touching the model, and guided
Grad-CAM (broken in keras-vis) and saliency are one call each.
No CLI equivalent yet: ``camlens explain`` feeds every model 3-channel RGB images, and this
model takes one gray channel.
"""

from __future__ import annotations

import keras
import numpy as np

import camlens
from camlens.render import panel


def build() -> keras.Model:
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2, name="last_pool"),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(256, activation="relu"),
            layers.Dense(10, activation="softmax", name="visualized_layer"),
        ]
    )
    model.compile("adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def main(digits: np.ndarray, labels: np.ndarray, epochs: int = 1, out: str = "t4_panel.png"):
    """``digits``: float (N, 28, 28) in [0, 1]; ``labels``: (N,) 0..9."""
    model = build()
    x = digits[..., None].astype("float32")
    model.fit(x, np.eye(10)[labels], epochs=epochs, batch_size=250, verbose=0)
    gray = (digits[0] * 255).astype("uint8")
    rows, explanations = [], {}
    for method in ("gradcam", "guided-gradcam", "saliency"):
        layer = "last_pool" if method == "gradcam" else "auto"  # keras-vis: the last pooling
        exp = camlens.explain(model, x[:1], method=method, target=int(labels[0]), layer=layer)
        rows.append((method, exp.maps[0], camlens.overlay(gray, exp.maps[0], alpha=0.5)))
        explanations[method] = exp
    panel(gray, rows, out)  # input (gray) | map (jet) | overlay, one row per method
    return model, x, explanations


if __name__ == "__main__":
    (images, targets), _ = keras.datasets.mnist.load_data()
    print(main(images[:5000] / 255.0, targets[:5000], epochs=3)[2]["gradcam"])
