"""Explain one output value of a model that is not a classifier (a regression head).

Runs offline: a tiny random-weight network with 3 outputs stands in for a trained regressor.
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
    nn.Linear(8, 3),  # 3 regressed values (say age, height, weight)
).eval()
x = torch.rand(2, 3, 64, 64)

exp = camlens.explain(model, x, "gradcam", target=("output", 1))  # or target="output:1"
print(exp.scores.tolist())  # the explained values: model(x)[:, 1]
assert torch.allclose(exp.scores, model(x)[:, 1].detach())
assert exp.probs.isnan().all()  # no probability: activation "none" is the default

# the same map as a hand-written target
same = camlens.explain(model, x, "gradcam", target=lambda out: out[:, 1])
assert torch.allclose(exp.maps, same.maps, atol=1e-6)
