"""The Keras tutorials (T1, T3, T4) on the TensorFlow backend; run by test_examples.py in a child.

Run directly: ``KERAS_BACKEND=tensorflow pytest tests/docs/keras_examples.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

keras = pytest.importorskip("keras")
ROOT = Path(__file__).resolve().parents[2]
# eager training (below) leaves tf.data's shuffle traced, and TensorFlow says so
pytestmark = pytest.mark.filterwarnings("ignore:Even though the `tf.config:UserWarning")
CAT = ROOT / "src" / "camlens" / "data" / "chelsea.jpg"


@pytest.fixture(autouse=True)
def eager():
    """One training step on a handful of images: tracing it as a graph costs ten times its run."""
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def photos(size: int) -> np.ndarray:
    import skimage.data

    pictures = [np.asarray(Image.open(CAT).convert("RGB")), skimage.data.astronaut()]
    pictures += [skimage.data.coffee(), skimage.data.chelsea()]
    return np.stack([np.asarray(Image.fromarray(p).resize((size, size))) for p in pictures])


def opened(path: Path) -> tuple[str, tuple[int, int]]:
    with Image.open(path) as picture:
        return picture.format, picture.size


def test_t1_keras_resnet50_cam(tmp_path):
    keras.utils.set_random_seed(0)
    images = photos(64)
    model, x, exp = load("t1_keras_resnet50_cats_dogs").main(
        images, np.array([0, 1, 1, 0]), weights=None, out=str(tmp_path / "panel.png")
    )
    assert exp.layer == "resnet50/conv5_block3_out" and exp.method == "cam"
    base, dense = model.layers[0], model.layers[-1]
    assert not base.trainable
    # the tutorial's formula by hand: base feature maps x Dense kernel column, summed over channels
    features = keras.ops.convert_to_numpy(base(x[:1]))[0]  # (2, 2, 2048)
    probs = keras.ops.convert_to_numpy(model(x[:1]))[0]
    column = int(probs.argmax())
    kernel = keras.ops.convert_to_numpy(dense.kernel)[:, column]
    cam = (features * kernel).sum(-1)
    assert exp.targets.tolist() == [column]
    np.testing.assert_allclose(exp.raw[0].numpy(), cam, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(exp.probs[0].item(), probs[column], rtol=1e-5)
    # shown: the signed map resized bicubically to the input, then min-max scaled (cv2.normalize)
    import torch

    up = torch.nn.functional.interpolate(
        torch.from_numpy(cam)[None, None], size=(64, 64), mode="bicubic", align_corners=False
    )[0, 0].numpy()
    shown = (up - up.min()) / (up.max() - up.min())
    np.testing.assert_allclose(exp.maps[0].numpy(), shown, atol=1e-4)
    assert opened(tmp_path / "panel.png") == ("PNG", (900, 320))


def test_t3_keras_mobilenetv2_threshold(tmp_path):
    import skimage.data

    keras.utils.set_random_seed(0)
    gray = [skimage.data.camera(), skimage.data.moon(), skimage.data.coins(), skimage.data.page()]
    xrays = np.stack([np.asarray(Image.fromarray(g).resize((96, 96))) for g in gray])
    out = tmp_path / "cam.jpg"
    exp, picture = load("t3_keras_mobilenetv2_xray").main(
        xrays, np.array([0, 1, 0, 1]), out=str(out)
    )
    assert exp.layer == "Conv_1" and exp.raw.shape == (1, 3, 3)  # layers[-3]: Conv_1, 1280 maps
    below = exp.maps[0].numpy() < 0.2
    assert 0 < below.sum() < below.size
    original = np.repeat(xrays[0][..., None], 3, axis=-1)
    np.testing.assert_array_equal(picture[below], original[below])  # no heatmap under 0.2
    assert (picture[~below] != original[~below]).any()
    assert opened(out) == ("JPEG", (96, 96))


def test_t4_keras_mnist_gradcam(tmp_path):
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(0)
    digits = load_digits()
    small = digits.images[:400] / 16.0
    upscaled = np.stack(
        [np.asarray(Image.fromarray(d).resize((28, 28), Image.BILINEAR)) for d in small]
    )
    model, x, exps = load("t4_keras_mnist_gradcam").main(
        upscaled.clip(0, 1), digits.target[:400], out=str(tmp_path / "panel.png")
    )
    gradcam = exps["gradcam"]
    assert gradcam.layer == "last_pool" and gradcam.raw.shape == (1, 5, 5)
    # pre-softmax score without swapping the activation: penultimate features @ kernel + bias
    dense = model.get_layer("visualized_layer")
    hidden = x[:1]
    for layer in model.layers[:-1]:
        hidden = layer(hidden)  # dropout is off outside fit
    logits = keras.ops.convert_to_numpy(hidden) @ keras.ops.convert_to_numpy(dense.kernel)
    logits = logits + keras.ops.convert_to_numpy(dense.bias)
    target = int(digits.target[0])
    np.testing.assert_allclose(gradcam.scores[0].item(), logits[0, target], rtol=1e-5, atol=1e-5)
    assert dense.activation.__name__ == "softmax"  # the model was not modified
    assert exps["guided-gradcam"].maps.shape == exps["saliency"].maps.shape == (1, 28, 28)
    assert exps["saliency"].layer == "" and float(exps["saliency"].maps.max()) == 1.0
    assert opened(tmp_path / "panel.png") == ("PNG", (900, 920))


def test_t3_cli_on_the_saved_model(tmp_path):
    """T3's CLI line: ``camlens explain xray.png --model t3.keras --method cam --threshold 0.2``."""
    from typer.testing import CliRunner

    from camlens.cli import app

    keras.utils.set_random_seed(0)
    load("t3_keras_mobilenetv2_xray").build(64).save(tmp_path / "t3.keras")
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(tmp_path / "xray.png")
    arguments = ["explain", str(tmp_path / "xray.png"), "--model", str(tmp_path / "t3.keras")]
    arguments += ["--method", "cam", "--threshold", "0.2", "--size", "64", "-q"]
    result = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "report.html").exists()
