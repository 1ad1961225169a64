"""What the library refuses to explain, and how it says so: file names where a batch is expected,
an empty batch, NaN or inf in the input or the output; half-precision models work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from toy_models import NaNForNegative, SmallCNN

import camlens
from camlens.backends.torch import TorchAdapter
from camlens.methods import PixelMethod
from camlens.methods import _registry as registry

#: Options keeping every method fast on a 64 px batch of 2.
FAST = {
    "scorecam": {"top_k_channels": 4},
    "smoothgrad": {"samples": 4},
    "integrated-gradients": {"steps": 8},
}


def batch(images: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(images, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("x", "shown"),
    [
        ("cat.jpg", "['cat.jpg']"),
        (Path("cat.jpg"), "['cat.jpg']"),
        (["cat.jpg", "dog.jpg"], "['cat.jpg', 'dog.jpg']"),
        (PIL.Image.new("RGB", (8, 8)), "[image]"),
        (np.zeros((8, 8, 3), np.uint8), "[image]"),
    ],
    ids=["str", "path", "list", "pil", "numpy"],
)
def test_files_and_pictures_are_refused_with_how_to_load_them(x, shown) -> None:
    model = SmallCNN().eval()
    for call in (lambda: camlens.explain(model, x), lambda: camlens.GradCAM(model)(x)):
        with pytest.raises(camlens.CamlensTypeError) as error:
            call()
        message = str(error.value)
        assert message.startswith("x must be a preprocessed tensor of shape (B, C, H, W)")
        assert f"x, images = camlens.load_images({shown})" in message


def test_layers_refuses_a_file_name() -> None:
    with pytest.raises(camlens.CamlensTypeError, match="x must be a preprocessed tensor"):
        camlens.layers(SmallCNN(), "cat.jpg")


@pytest.mark.parametrize("method", camlens.methods(SmallCNN()))
def test_an_empty_batch_is_refused(method: str) -> None:
    with pytest.raises(camlens.CamlensValueError) as error:
        camlens.explain(SmallCNN().eval(), batch()[:0], method)
    assert str(error.value) == (
        "x is an empty batch (0 images) of shape (0, 3, 64, 64); pass at least one image"
    )


def test_nan_or_inf_in_the_input_is_refused_naming_the_images() -> None:
    x = batch(4)
    x[1, 0, 3, 3] = float("nan")
    x[3, 2, 0, :2] = float("inf")
    with pytest.raises(camlens.CamlensValueError) as error:
        camlens.explain(SmallCNN().eval(), x)
    assert str(error.value).startswith(
        "x holds NaN or inf values (images 1, 3): 3 of 49152 values; "
    )


def test_an_input_overflowing_a_float16_model_is_refused() -> None:
    x = batch()
    x[0, 0, 0, 0] = 1e6
    with pytest.raises(
        camlens.CamlensValueError, match=r"\(image 0\): 1 of 24576 values; they overflow the mo"
    ):
        camlens.explain(SmallCNN().eval().half(), x)


@pytest.mark.parametrize("method", camlens.methods(SmallCNN()))
def test_nan_in_the_output_warns_and_gives_nan_maps(method: str) -> None:
    model = NaNForNegative().eval()
    x = batch()
    x[1] -= 1  # a negative mean: NaN everywhere in the model for image 1
    options = FAST.get(method, {})
    with pytest.warns(camlens.CamlensWarning, match=r"output holds NaN or inf for image 1; its ma"):
        exp = camlens.explain(model, x, method, **options)
    # image 0 beside a sound image 1: the same batch shape, so seeded draws (SS-CAM, GradientShap,
    # RISE) are the same and only image 1's NaN differs
    beside = camlens.explain(model, batch(), method, **options)
    assert exp.maps[1].isnan().all() and exp.raw[1].isnan().all()
    assert torch.allclose(exp.maps[0], beside.maps[0], atol=1e-5)
    assert exp.targets.shape == (2,) and exp.targets[0] == beside.targets[0]
    assert exp.scores[1].isnan()


def test_an_explicit_target_is_reported_for_an_image_with_nan_output() -> None:
    x = batch()
    x[0] -= 1
    with pytest.warns(camlens.CamlensWarning, match="for image 0"):
        exp = camlens.explain(NaNForNegative().eval(), x, target=3)
    assert exp.targets.tolist() == [3, 3]
    assert exp.maps[0].isnan().all() and not exp.maps[1].isnan().any()


#: The largest difference between a half-precision model's maps and the float32 maps of the same
#: (cast) weights, measured on SmallCNN at 64 px: layer maps agree closely; pixel-space maps are
#: gradients at single pixels, where a ReLU flipped by rounding moves the map, and Ablation-CAM's
#: weights are differences of nearly equal scores; FullGrad scales every channel of every bias
#: layer to [0, 1], so rounding in its faintest channels moves the sum (measured 0.11, 0.10).
HALF_TOLERANCE = {
    torch.float16: {"layer": 2e-3, "ablationcam": 0.02, "pixel": 0.1, "fullgrad": 0.15},
    torch.bfloat16: {"layer": 1e-2, "ablationcam": 0.2, "pixel": 0.15, "fullgrad": 0.15},
}


#: Methods whose map is the model's score per location (Recipro-CAM, RISE) or its drop
#: (occlusion): no gradient, many forwards of the half-precision model.
SCORED = {"occlusion", "reciprocam", "rise"}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("method", camlens.methods(SmallCNN()))
def test_half_precision_weights_give_the_float32_maps(method: str, dtype: torch.dtype) -> None:
    half = SmallCNN().eval().to(dtype)
    x = batch().to(dtype)
    options = FAST.get(method, {})
    exact = camlens.explain(SmallCNN().eval().to(dtype).float(), x.float(), method, **options)
    exp = camlens.explain(half, x, method, **options)
    assert exp.maps.dtype == exp.raw.dtype == torch.float32
    assert exp.targets.tolist() == exact.targets.tolist()
    if method in SCORED:
        # the map is a score (or a score's drop) per location; on this random model they differ
        # by less than the score's rounding, so the scaled maps are rounding noise and the bound
        # is on the raw scores: within one rounding of the largest score (measured <= 0.85)
        bound = torch.finfo(dtype).eps * exact.scores.abs().max()
        assert (exp.raw - exact.raw).abs().max() <= bound
        return
    pixel = issubclass(registry.get(method), PixelMethod)
    kind = "pixel" if pixel else "layer"
    kind = method if method in HALF_TOLERANCE[dtype] else kind
    assert (exp.maps - exact.maps).abs().max() < HALF_TOLERANCE[dtype][kind]


def test_score_cam_auto_precision_runs_a_float16_model_in_its_own_dtype(monkeypatch) -> None:
    monkeypatch.setattr(TorchAdapter, "bf16_ok", lambda self: True)  # a GPU or an AMX CPU
    x = batch().half()
    exact = camlens.explain(
        SmallCNN().eval().half().float(), x.float(), "scorecam", precision="fp32"
    )
    half = camlens.explain(SmallCNN().eval().half(), x, "scorecam")
    assert (half.maps - exact.maps).abs().max() < HALF_TOLERANCE[torch.float16]["layer"]


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_score_cam_refuses_reduced_precision_on_a_float16_model(precision: str) -> None:
    with pytest.raises(camlens.CamlensValueError) as error:
        camlens.explain(SmallCNN().eval().half(), batch(), "scorecam", precision=precision)
    assert str(error.value) == (
        f"method 'scorecam' with precision={precision!r} runs a float32 model in reduced "
        "precision, but this model's weights are already float16; use precision='auto', or "
        "model.float() first"
    )
