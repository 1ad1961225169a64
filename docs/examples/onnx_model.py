"""Explain an ONNX model: export a tiny random CNN with torch.onnx.export, load it with
camlens.load_model and explain it with the gradient-free methods (nothing is downloaded)."""

import warnings

import torch

import camlens

torch.manual_seed(0)
network = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
    torch.nn.ReLU(),
    torch.nn.Conv2d(8, 16, 3, padding=1),
    torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(1),
    torch.nn.Flatten(),
    torch.nn.Linear(16, 4),
).eval()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
    torch.onnx.export(
        network,
        (torch.zeros(1, 3, 64, 64),),
        "tiny.onnx",
        dynamo=False,  # the TorchScript exporter: no onnxscript needed
        input_names=["image"],
        dynamic_axes={"image": {0: "batch"}},  # any batch size, fixed 64 x 64 images
    )

model = camlens.load_model("tiny.onnx")  # run by ONNX Runtime, float32, on the CPU
x = torch.rand(2, 3, 64, 64)
layers, auto = camlens.layers(model, x)
print([layer.name for layer in layers], "auto:", auto)  # the graph's spatial tensors
print(camlens.methods(model))  # the methods that need no gradient
for method in ("eigencam", "ablationcam", "scorecam"):
    exp = camlens.explain(model, x, method)
    print(method, exp.layer, tuple(exp.maps.shape), exp.targets.tolist())
# the PyTorch model gives the same maps
assert torch.allclose(exp.maps, camlens.explain(network, x, "scorecam").maps, atol=1e-4)
