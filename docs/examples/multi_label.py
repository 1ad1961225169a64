"""Several classes per image: the top 2 classes, and every label a multi-label model is sure of.

Runs offline: a tiny random-weight network stands in for a trained multi-label model.
"""

import torch
from torch import nn

import camlens

torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 8, 3, padding=1),
    nn.ReLU(),
    nn.AdaptiveAvgPool2d(1),
    nn.Flatten(),
    nn.Linear(8, 4),  # 4 labels, one sigmoid each
).eval()
x = torch.rand(2, 3, 64, 64)

# the 2 best classes of each image: 4 maps from one batched pass
exp = camlens.explain(model, x, "gradcam", target="top2")
print(exp.maps.shape, exp.index.tolist(), exp.targets.tolist())

# every label whose sigmoid reaches 0.5 (an image with none gets no map)
exp = camlens.explain(model, x, "gradcam", target="above:0.5", activation="sigmoid")
for image, label, prob in zip(exp.index.tolist(), exp.targets.tolist(), exp.probs.tolist()):
    print(f"image {image}: label {label}, probability {prob:.3f}")

# your own classes per image
exp = camlens.explain(model, x, "scorecam", target=[[0, 3], [1]])
assert exp.index.tolist() == [0, 0, 1]
