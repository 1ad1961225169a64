"""Checks of the Keras adapter, run once per Keras backend by tests/backends/test_keras.py.

The backend is fixed per process, so this module is not collected by a plain ``pytest``; run it
alone with ``KERAS_BACKEND=torch pytest tests/backends/keras_cases.py`` (or tensorflow).
Random weights, fixed seeds, small inputs.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn as nn

keras = pytest.importorskip("keras")

import camlens  # noqa: E402
from camlens.backends import adapter_for  # noqa: E402
from camlens.backends.keras import KerasAdapter  # noqa: E402
from camlens.methods._registry import get, options_for  # noqa: E402
from camlens.models.keras import load_spec  # noqa: E402

BACKEND = keras.backend.backend()
CAM_FAMILY = ["cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"]
TUTORIAL_METHODS = ["cam", "gradcam", "gradcam++", "scorecam"]
RNG = np.random.default_rng(0)


def numpy(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def close(a, b, tol: float = 1e-4) -> bool:
    """Equal up to ``tol`` relative to the larger magnitude."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-12)
    return bool(np.abs(a - b).max() <= tol * scale)


# ---------------------------------------------------------------------------- the tutorials
def resnet_tutorial():
    """Sequential([ResNet50(include_top=False), GAP, Dense(2, softmax)]): a nested model."""
    keras.utils.set_random_seed(0)
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    return keras.Sequential(
        [
            keras.Input((64, 64, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )


def mobilenet_tutorial():
    """Functional: MobileNetV2(include_top=False) called on an Input, GAP, Dense(2, softmax)."""
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(64, 64, 3), name="mobilenetv2"
    )
    inputs = keras.Input((64, 64, 3))
    h = base(inputs, training=False)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))


def mnist_cnn():
    """The Keras MNIST example: two conv blocks with dropout, two dense layers."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(32, 3, activation="relu", name="conv2d"),
            L.MaxPooling2D(),
            L.Dropout(0.25),
            L.Conv2D(64, 3, activation="relu", name="conv2d_1"),
            L.MaxPooling2D(),
            L.Dropout(0.25),
            L.Flatten(),
            L.Dense(256, activation="relu"),
            L.Dense(10, activation="softmax"),
        ]
    )


TUTORIALS = {
    "resnet50": (resnet_tutorial, (64, 64, 3), "resnet50/conv5_block3_out"),
    "mobilenetv2": (mobilenet_tutorial, (64, 64, 3), "mobilenetv2/out_relu"),
    "mnist": (mnist_cnn, (28, 28, 1), "conv2d_1"),
}


@pytest.fixture(scope="module")
def tutorial():
    built: dict[str, tuple] = {}

    def get(name: str):
        if name not in built:
            factory, shape, layer = TUTORIALS[name]
            x = RNG.random((1, *shape), dtype=np.float32)
            built[name] = factory(), x, layer
        return built[name]

    return get


@pytest.mark.parametrize("method", TUTORIAL_METHODS)
@pytest.mark.parametrize("name", list(TUTORIALS))
def test_tutorial_architectures(tutorial, name, method):
    model, x, layer = tutorial(name)
    probabilities = numpy(model(x, training=False))
    if method == "cam" and name == "mnist":
        with pytest.raises(camlens.CamlensValueError, match="needs the linear head to read"):
            camlens.explain(model, x, method="cam")
        return
    # Score-CAM's 2048/1280 masked forwards of ResNet50/MobileNetV2 are a benchmark, not a unit
    # test: there it runs on the 8 most active channels (Faster Score-CAM), in full on the MNIST CNN
    options = {"top_k_channels": 8} if method == "scorecam" and name != "mnist" else {}
    exp = camlens.explain(model, x, method=method, **options)
    assert exp.layer == layer
    assert exp.maps.shape == (1, *x.shape[1:3]) and exp.maps.dtype == torch.float32
    assert float(exp.maps.max()) == 1.0 and float(exp.maps.min()) == 0.0
    # scores are the logits before the softmax: the model's own output is their softmax
    target = int(exp.targets[0])
    assert close(exp.probs[0], probabilities[0, target], 1e-5)
    assert probabilities[0, target] == probabilities[0].max()


def test_nested_cam_equals_the_tutorial_formula(tutorial):
    """CAM = feature maps times the Dense kernel column of the class, summed over channels."""
    model, x, layer = tutorial("resnet50")
    base, dense = model.layers[0], model.layers[-1]
    features = numpy(base(x, training=False))  # (1, 2, 2, 2048)
    kernel, bias = numpy(dense.kernel), numpy(dense.bias)
    target = 1
    exp = camlens.explain(model, x, method="cam", target=target)
    expected = (features * kernel[:, target]).sum(axis=-1)
    assert close(exp.raw.numpy(), expected)
    logit = features.mean(axis=(1, 2)) @ kernel[:, target] + bias[target]
    assert close(exp.scores.numpy(), logit, 1e-5)
    assert close(exp.raw.mean(dim=(1, 2)).numpy(), logit - bias[target])  # CAM's identity


def test_nested_layers_are_paths(tutorial):
    model, x, _ = tutorial("resnet50")
    infos, auto = camlens.layers(model, x)
    names = [info.name for info in infos]
    assert auto == "resnet50/conv5_block3_out" and "resnet50" not in names
    assert infos[-1].shape == (1, 2, 2, 2048) and infos[-1].layout.kind == "nhwc"
    exp = camlens.explain(model, x, method="gradcam", layer="resnet50/conv4_block6_out")
    assert exp.raw.shape == (1, 4, 4) and exp.layer == "resnet50/conv4_block6_out"
    inner = model.layers[0].get_layer("conv4_block6_out")
    assert adapter_for(model).resolve_layers(inner, x) == ["resnet50/conv4_block6_out"]
    with pytest.raises(camlens.CamlensValueError, match="candidates: resnet50/conv5_block3_out"):
        camlens.explain(model, x, layer="resnet50/conv5_block3_ou")


def test_logits_from_a_layer_inside_a_residual_block(tutorial):
    """Above a layer inside a block, the skip connection comes from the pass on x."""
    model, x, _ = tutorial("resnet50")
    adapter = adapter_for(model)
    layer = "resnet50/conv5_block3_2_relu"
    capture = adapter.capture(x, [layer], None, gradients=False)
    a, logits = capture.activations[0], capture.logits
    twice = adapter.logits_from(x, layer, torch.cat([a, torch.zeros_like(a)]))
    assert close(twice[:1], logits, 1e-5)
    assert not close(twice[1:], logits, 1e-3)  # the block's branch matters


def test_logits_from_equals_the_layers_above(tutorial):
    model, x, _ = tutorial("mnist")
    adapter = adapter_for(model)
    a = adapter.capture(x, ["conv2d_1"], None, gradients=False).activations[0]
    changed = torch.cat([a, a * 0.5, a.flip(-1)])  # 3 rows for the one image
    h = keras.ops.convert_to_tensor(changed.permute(0, 2, 3, 1).contiguous().cpu().numpy())
    for layer in model.layers[4:-1]:
        h = layer(h, training=False)
    dense = model.layers[-1]
    expected = numpy(h) @ numpy(dense.kernel) + numpy(dense.bias)
    assert close(adapter.logits_from(x, "conv2d_1", changed), expected, 1e-5)


def test_softmax_heads_are_explained_on_logits_and_left_alone():
    keras.utils.set_random_seed(3)
    L = keras.layers
    inputs = keras.Input((12, 12, 3))
    features = L.GlobalAveragePooling2D()(L.Conv2D(5, 3, activation="relu", name="conv")(inputs))
    fused = keras.Model(inputs, L.Dense(3, activation="softmax", name="head")(features))
    logits_layer = L.Dense(3, name="head2")
    split = keras.Model(inputs, L.Softmax()(logits_layer(features)))
    activation = keras.Model(inputs, L.Activation("softmax")(logits_layer(features)))
    logits_layer.set_weights(fused.get_layer("head").get_weights())
    x = RNG.random((2, 12, 12, 3), dtype=np.float32)
    before = [w.copy() for w in fused.get_weights()]
    feats = numpy(keras.Model(inputs, features)(x))
    kernel, bias = fused.get_layer("head").get_weights()
    expected = feats @ kernel + bias
    maps = []
    for model in (fused, split, activation):
        exp = camlens.explain(model, x, method="cam", target=[0, 2])
        assert close(exp.scores.numpy(), expected[[0, 1], [0, 2]], 1e-5)
        assert exp.layer == "conv"
        maps.append(exp.raw)
    assert close(maps[0], maps[1], 1e-6) and close(maps[0], maps[2], 1e-6)
    assert fused.get_layer("head").activation is keras.activations.softmax
    assert all(np.array_equal(a, b) for a, b in zip(before, fused.get_weights()))
    assert close(numpy(fused(x)), torch.tensor(expected).softmax(1).numpy(), 1e-5)


def test_training_false_dropout_and_batchnorm():
    keras.utils.set_random_seed(4)
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            L.Conv2D(6, 3, name="conv"),
            L.BatchNormalization(),
            L.Activation("relu", name="relu"),
            L.Dropout(0.5),
            L.GlobalAveragePooling2D(),
            L.Dense(3),
        ]
    )
    x = RNG.random((2, 16, 16, 3), dtype=np.float32)
    stats = [w.copy() for w in model.get_weights()]
    first = camlens.explain(model, x, method="gradcam", layer="relu")
    second = camlens.explain(model, x, method="gradcam", layer="relu")
    assert torch.equal(first.raw, second.raw)
    assert close(first.scores, numpy(model(x, training=False))[[0, 1], first.targets], 1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(stats, model.get_weights()))


# ---------------------------------------------------------------------------- parity with torch
def twins(dense_head: bool):
    """The same small CNN in Keras and in PyTorch, with the same weights."""
    keras.utils.set_random_seed(1)
    L = keras.layers
    inputs = keras.Input((16, 16, 3))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(h)
    h = L.Flatten()(h) if dense_head else L.GlobalAveragePooling2D()(h)
    kmodel = keras.Model(inputs, L.Dense(4, name="head")(h))
    rng = np.random.default_rng(2)
    for layer in (kmodel.get_layer(n) for n in ("conv1", "conv2", "head")):
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype(np.float32)])
    features = 16 * 16 * 6 if dense_head else 6
    pool = nn.Flatten() if dense_head else nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    tmodel = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1),
        nn.ReLU(),
        pool,
        nn.Linear(features, 4),
    ).eval()
    with torch.no_grad():
        for index, name in ((0, "conv1"), (2, "conv2")):
            kernel, bias = kmodel.get_layer(name).get_weights()
            tmodel[index].weight.copy_(torch.from_numpy(kernel).permute(3, 2, 0, 1))
            tmodel[index].bias.copy_(torch.from_numpy(bias))
        kernel, bias = kmodel.get_layer("head").get_weights()
        if dense_head:  # Keras flattens (h, w, c), torch (c, h, w)
            kernel = kernel.reshape(16, 16, 6, 4).transpose(2, 0, 1, 3).reshape(-1, 4)
        tmodel[5].weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T)))
        tmodel[5].bias.copy_(torch.from_numpy(bias))
    x = np.random.default_rng(5).random((2, 16, 16, 3), dtype=np.float32)
    return kmodel, tmodel, x, torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module", params=[False, True], ids=["gap", "dense"])
def pair(request):
    return (*twins(request.param), request.param)


#: Methods implemented for PyTorch models only, each refused for Keras models with this error.
TORCH_ONLY = {
    name: "implemented for PyTorch models only"
    for name in (
        "deconvolution",
        "shapleycam",
        "fullgrad",
        "rollout",
        "transformer-attribution",
        "legrad",
    )  # fmt: skip
}


def _parity_methods() -> list[str]:
    rest = [m for m in camlens.methods() if m not in CAM_FAMILY and m not in TORCH_ONLY]
    return CAM_FAMILY + rest


@pytest.mark.parametrize("method", sorted(TORCH_ONLY))
def test_torch_only_methods_refuse_keras_models(pair, method):
    with pytest.raises(camlens.CamlensValueError, match=TORCH_ONLY[method]):
        camlens.explain(pair[0], pair[2], method=method, target=[1, 3])


@pytest.mark.parametrize("method", _parity_methods())
def test_parity_with_pytorch(pair, method):
    kmodel, tmodel, x, xt = pair[:4]
    layer = {"layer": "conv2"}, {"layer": "3"}
    if not get(method).uses_layer:
        layer = {}, {}
    exact = options_for(method, precision="fp32")  # "auto" may pick bf16 for the torch twin
    try:
        torch.manual_seed(0)
        reference = camlens.explain(tmodel, xt, method=method, target=[1, 3], **layer[1], **exact)
    except camlens.CamlensError as error:  # CAM on the dense head: both must refuse
        with pytest.raises(type(error), match=re.escape(str(error))):
            camlens.explain(kmodel, x, method=method, target=[1, 3], **layer[0])
        return
    torch.manual_seed(0)
    exp = camlens.explain(kmodel, x, method=method, target=[1, 3], **layer[0])
    assert close(exp.maps, reference.maps)
    assert close(exp.raw, reference.raw)
    assert close(exp.scores, reference.scores, 1e-5) and torch.equal(exp.targets, reference.targets)


def test_parity_callable_target_and_predicted_class(pair):
    kmodel, tmodel, x, xt = pair[:4]

    def margin(logits):
        return logits[:, 2] - logits[:, 0]

    for target in (margin, None):
        exp = camlens.explain(kmodel, x, method="gradcam", target=target, layer="conv2")
        ref = camlens.explain(tmodel, xt, method="gradcam", target=target, layer="3")
        assert close(exp.raw, ref.raw) and close(exp.scores, ref.scores, 1e-5)
        assert torch.equal(exp.targets, ref.targets)


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)


class GuidedReLU(nn.Module):
    def forward(self, x):
        return _GuidedReLU.apply(x)


@pytest.mark.parametrize("guided", [False, True], ids=["plain", "guided"])
def test_input_gradients_parity(pair, guided):
    kmodel, tmodel, x, xt = pair[:4]
    adapter = adapter_for(kmodel)
    capture = adapter.input_gradients(x, target=[1, 3], guided=guided)
    reference = nn.Sequential(*[GuidedReLU() if isinstance(m, nn.ReLU) else m for m in tmodel])
    leaf = xt.clone().requires_grad_()
    logits = (reference if guided else tmodel)(leaf)
    (grad,) = torch.autograd.grad(logits[[0, 1], [1, 3]].sum(), leaf)
    assert torch.equal(capture.activations[0].cpu(), xt)
    assert close(capture.gradients[0].cpu(), grad)
    assert close(capture.logits.cpu(), logits.detach(), 1e-5)
    # canonical (B, C, H, W) torch input gives the same
    again = adapter.input_gradients(xt, target=[1, 3], guided=guided)
    assert close(again.gradients[0].cpu(), grad)


def test_logits_from_parity(pair):
    kmodel, tmodel, x, xt = pair[:4]
    adapter = adapter_for(kmodel)
    a = torch.from_numpy(np.random.default_rng(6).random((4, 6, 16, 16), dtype=np.float32))
    with torch.no_grad():
        expected = tmodel[4:](a)
    assert close(adapter.logits_from(x, "conv2", a), expected, 1e-5)
    assert close(adapter.logits(xt), tmodel(xt).detach(), 1e-5)


# ---------------------------------------------------------------------------- inputs and errors
def test_inputs_and_errors(pair):
    kmodel, _, x, xt = pair[:4]
    native = camlens.explain(kmodel, x, method="gradcam", layer="conv2")
    canonical = camlens.explain(kmodel, xt, method="gradcam", layer="conv2")
    assert torch.equal(native.maps, canonical.maps)
    adapter = adapter_for(kmodel)
    assert isinstance(adapter, KerasAdapter) and adapter.framework == "keras"
    assert torch.equal(adapter.as_tensor(x).cpu(), xt) and adapter.input_size(x) == (16, 16)
    with pytest.raises(camlens.CamlensValueError, match=r"expected x of shape \(B, H, W, C\), got"):
        camlens.explain(kmodel, x[0])
    with pytest.raises(camlens.CamlensTypeError, match="expected x as a float array, got dtype"):
        camlens.explain(kmodel, (x * 255).astype(np.uint8))
    with pytest.raises(camlens.CamlensTypeError, match=r"got a file name 'cat.jpg'; load and"):
        camlens.explain(kmodel, "cat.jpg")
    with pytest.raises(camlens.CamlensValueError, match=r"x is an empty batch \(0 images\) of sh"):
        camlens.explain(kmodel, x[:0])
    broken = x.copy()
    broken[-1, 0, 0, 0] = np.nan
    with pytest.raises(camlens.CamlensValueError, match=rf"\(image {len(x) - 1}\): 1 of "):
        camlens.explain(kmodel, broken)
    with pytest.raises(camlens.CamlensValueError, match="'conv3' is not a layer"):
        camlens.explain(kmodel, x, layer="conv3")
    with pytest.raises(camlens.CamlensValueError, match="out of range for a model with 4 classes"):
        camlens.explain(kmodel, x, target=4)
    with pytest.raises(
        camlens.CamlensValueError,
        match=r"precision='int8' needs a PyTorch model \(it uses PyTorch's int8 kernels\); run "
        r"this Keras model with precision='fp32'",
    ):
        camlens.explain(kmodel, x, method="scorecam", layer="conv2", precision="int8")


def test_the_whole_adapter_protocol(pair):
    """Every member of camlens.backends.Adapter; targets that read the whole output are refused."""
    from camlens.backends import Adapter

    adapter = adapter_for(pair[0])
    members = set(Adapter.__annotations__) | {n for n in vars(Adapter) if not n.startswith("_")}
    assert {"device", "outputs"} <= members and all(hasattr(adapter, n) for n in members)
    assert adapter.device == torch.device("cpu")
    with pytest.raises(camlens.CamlensTypeError, match="whole output .* take PyTorch models"):
        adapter.outputs(pair[3])


def test_load_spec(tmp_path, pair):
    kmodel, _, x = pair[:3]
    path = tmp_path / "tiny.keras"
    kmodel.save(path)
    loaded = load_spec(str(path))
    a = camlens.explain(kmodel, x, method="gradcam++", layer="conv2")
    b = camlens.explain(loaded, x, method="gradcam++", layer="conv2")
    assert torch.equal(a.maps, b.maps)
    app = load_spec("keras:MobileNetV2", "none")
    assert isinstance(app, keras.Model) and app.output_shape == (None, 1000)
    with pytest.raises(camlens.CamlensValueError, match="close names: MobileNetV2"):
        load_spec("keras:MobilenetV2")
    with pytest.raises(camlens.CamlensValueError, match="does not exist"):
        load_spec(str(tmp_path / "missing.keras"))
    with pytest.raises(camlens.CamlensValueError, match="neither 'DEFAULT'"):
        load_spec("keras:ResNet50", "nope.h5")


def test_unbuilt_sequential_and_subclassed_models():
    keras.utils.set_random_seed(7)
    L = keras.layers
    model = keras.Sequential(
        [
            L.Conv2D(4, 3, activation="relu", name="c"),
            L.GlobalAveragePooling2D(),
            L.Dense(3, "softmax"),
        ]
    )
    x = RNG.random((2, 10, 10, 3), dtype=np.float32)
    exp = camlens.explain(model, x, method="cam", target=2)  # builds it, as a first call would
    assert exp.layer == "c" and exp.raw.shape == (2, 8, 8)
    assert close(exp.probs, numpy(model(x))[:, 2], 1e-5)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = L.Conv2D(2, 3)

        def call(self, inputs):
            return self.conv(inputs)

    with pytest.raises(camlens.CamlensTypeError, match="overrides call\\(\\); camlens explains"):
        camlens.explain(Subclassed(), x)


@pytest.mark.parametrize(
    "name, module, mode",
    [("ResNet50", "resnet50", "caffe"), ("MobileNetV2", "mobilenet_v2", "tf")],
)
def test_preprocess_auto_is_the_applications_own(name, module, mode):
    """``--preprocess auto`` on keras:NAME is that application's preprocess_input, which for
    these two is the caffe and the tf formula."""
    from camlens.images.preprocessing import resolve

    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    chosen = resolve("auto", f"keras:{name}", None)
    assert chosen.name == f"keras:{name}'s preprocess_input"
    function = getattr(keras.applications, module).preprocess_input
    want = np.asarray(function(x.permute(0, 2, 3, 1).numpy() * 255.0), dtype=np.float32)
    got = chosen(x)
    assert np.allclose(got.permute(0, 2, 3, 1).numpy(), want, atol=1e-4)
    assert torch.allclose(got, resolve(mode, f"keras:{name}", None)(x), atol=1e-4)


def test_cli_explains_a_keras_mnist_file(tmp_path):
    """A saved one-channel 28x28 Keras model: the command line takes its size and channels from
    the model, feeds [0, 1] images (and says so), and explains them."""
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from camlens.cli import app

    model = mnist_cnn()
    path = tmp_path / "digits.keras"
    model.save(path)
    digit = np.zeros((40, 40), np.uint8)
    digit[8:32, 18:22] = 255
    Image.fromarray(digit).save(tmp_path / "one.png")
    out = tmp_path / "out"
    args = ["explain", str(tmp_path / "one.png"), "--model", str(path), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--method", "gradcam", "--no-panel", "-q"])
    assert result.exit_code == 0, result.output
    assert "note: feeding the Keras model images scaled to [0, 1]" in result.output
    row = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    x = np.asarray(Image.fromarray(digit).resize((28, 28), Image.BILINEAR), np.float32) / 255.0
    probs = numpy(model(x[None, :, :, None], training=False))[0]
    assert row["target"] == int(probs.argmax())
