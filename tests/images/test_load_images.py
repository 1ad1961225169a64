"""load_images: presets, colour modes, 16-bit images, crops aligned with originals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import camlens
from camlens.images.load import IMAGENET_MEAN, IMAGENET_STD, to_rgb


def test_imagenet_preset_resizes_crops_and_normalises(tmp_path):
    array = np.zeros((300, 400, 3), dtype=np.uint8)
    array[:, :, 0] = 255
    Image.fromarray(array).save(tmp_path / "red.png")
    x, originals = camlens.load_images([tmp_path / "red.png"])
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    expected = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(
        IMAGENET_STD
    )
    torch.testing.assert_close(x[0, :, 100, 100], expected)
    # the crop the model sees, at the original resolution: 300 * 224/256 = 262.5 -> 262
    assert originals[0].shape == (262, 262, 3)


def test_crop_lines_up_with_the_original():
    array = np.zeros((256, 512, 3), dtype=np.uint8)
    array[:, 256:] = 255  # right half white
    x, originals = camlens.load_images(array, preset="unit", size=224)
    assert originals[0].shape == (256, 256, 3)  # unit preset: crop ratio 1, square centre crop
    assert x[0, :, :, :100].max() == 0 and x[0, :, :, 124:].min() == 1


def test_gray_rgba_palette_and_16_bit(tmp_path):
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint8)).save(tmp_path / "gray.png")
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 1] = 100
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(np.full((8, 8), 128 * 257, dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.new("P", (8, 8), 3).save(tmp_path / "palette.png")
    assert to_rgb(tmp_path / "gray.png")[0, 0].tolist() == [200, 200, 200]
    assert to_rgb(tmp_path / "rgba.png")[0, 0].tolist() == [0, 100, 0]
    assert to_rgb(tmp_path / "deep.png")[0, 0].tolist() == [128, 128, 128]
    assert to_rgb(tmp_path / "palette.png").shape == (8, 8, 3)
    x, _ = camlens.load_images(
        [tmp_path / n for n in ("gray.png", "rgba.png", "deep.png")], preset="unit"
    )
    assert x.shape == (3, 3, 8, 8)
    torch.testing.assert_close(x[2], torch.full((3, 8, 8), 128 / 255))


def test_errors_name_the_file(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(camlens.CamlensValueError, match="bad.jpg' cannot be read"):
        camlens.load_images([tmp_path / "bad.jpg"])
    with pytest.raises(camlens.CamlensValueError, match="missing.png' does not exist"):
        camlens.load_images([tmp_path / "missing.png"])
    with pytest.raises(camlens.CamlensValueError, match="unknown preset 'imagnet'"):
        camlens.load_images([tmp_path / "bad.jpg"], preset="imagnet")
    with pytest.raises(camlens.CamlensValueError, match="different sizes"):
        camlens.load_images([np.zeros((4, 4)), np.zeros((5, 5))], preset="unit")


def test_phone_photos_are_upright_everywhere(tmp_path):
    """EXIF orientation 6 (turn 90 degrees clockwise): load_images, to_rgb, a run's overlays
    and Run.image all see the upright picture."""
    from camlens.runs.local import RunSettings, explain_files
    from camlens.runs.session import Session

    ramp = np.linspace(0, 255, 30 * 60 * 3).reshape(30, 60, 3).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(ramp).save(tmp_path / "phone.jpg", quality=95, exif=exif)
    with Image.open(tmp_path / "phone.jpg") as stored:
        upright = np.rot90(np.array(stored), k=-1)
    assert np.array_equal(to_rgb(tmp_path / "phone.jpg"), upright)
    _, originals = camlens.load_images(tmp_path / "phone.jpg", preset="unit", size=16)
    assert np.array_equal(originals[0], upright[15:45])  # the centre square of the upright
    explain_files(Session.from_spec("demo"), [tmp_path / "phone.jpg"], tmp_path / "run",
                  RunSettings(["cam"]), echo=lambda _: None)  # fmt: skip
    run = camlens.load_run(tmp_path / "run")
    assert np.array_equal(run.image(0), upright)
    assert (run.results["width"][0], run.results["height"][0]) == (30, 60)
    with Image.open(tmp_path / "run" / run.results["overlay"][0]) as overlay:
        assert overlay.size == (30, 60)


def test_16_bit_arrays_are_shifted_not_floated():
    deep = np.array([[0, 257, 257 * 128, 65535]], dtype=np.uint16)
    assert to_rgb(deep)[0, :, 1].tolist() == [0, 1, 128, 255]
    assert to_rgb(np.array([[0.0, 0.5, 1.0, 2.0]], dtype=np.float32))[0, :, 0].tolist() == [
        0, 128, 255, 255
    ]  # fmt: skip
