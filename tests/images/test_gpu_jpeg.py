"""JPEGs decoded on the GPU (camlens.images.gpu_jpeg), checked on the CPU: torchvision's JPEG
decoder against the CPU decoder's pixels, the GPU resize against Pillow's, and which files of a
batch take the GPU path (the capability check patched, ``device="cpu"`` standing in for CUDA)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from needs import need
from PIL import Image

from camlens.images import gpu_jpeg
from camlens.images.decode import decode, read_image
from camlens.images.pixels import resize_unit

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    from skimage import data

    return data.chelsea()  # 300 x 451 RGB


def jpeg(image: np.ndarray, path=None, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90, **options)
    if path is not None:
        path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def test_torchvision_decodes_the_cpu_decoders_pixels(chelsea):
    """torchvision's decode_jpeg (libjpeg-turbo, measured: max difference 0) gives the bytes the
    CPU decoder (Pillow) gives; nvJPEG differs from both by its IDCT's rounding only."""
    need("torchvision")
    data = jpeg(chelsea)
    (image,) = gpu_jpeg._decode([data], CPU)
    assert image is not None and image.dtype == torch.uint8
    difference = np.abs(image.permute(1, 2, 0).numpy().astype(int) - read_image(data).astype(int))
    assert difference.max() == 0


@pytest.mark.parametrize("size", [64, 112, 451])
def test_gpu_resize_is_within_one_level_of_pillows(chelsea, size):
    unit = gpu_jpeg.unit_on(torch.from_numpy(chelsea).permute(2, 0, 1), size)
    expected = resize_unit(chelsea, size)
    assert unit.shape == expected.shape == (3, size, size)
    assert (unit - expected).abs().max() * 255 <= 1.0 + 1e-4
    assert (unit - expected).abs().mean() * 255 < 0.2


@pytest.fixture
def files(tmp_path, chelsea):
    """A batch of every kind: a plain JPEG, a PNG, a phone photo rotated by EXIF, grayscale and
    CMYK JPEGs, a truncated JPEG (its header reads), one that is no image, a second plain one."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the CPU decoder turns it upright
    made = {
        "plain.jpg": lambda p: jpeg(chelsea, p),
        "flat.png": lambda p: Image.fromarray(chelsea).save(p),
        "phone.jpg": lambda p: jpeg(chelsea, p, exif=exif),
        "gray.jpg": lambda p: Image.fromarray(chelsea).convert("L").save(p, "JPEG"),
        "cmyk.jpg": lambda p: Image.fromarray(chelsea).convert("CMYK").save(p, "JPEG"),
        "cut.jpg": lambda p: p.write_bytes(jpeg(chelsea)[:6000]),
        "text.jpg": lambda p: p.write_text("not an image"),
        "small.jpg": lambda p: jpeg(chelsea[:64, :80], p),
    }
    paths = []
    for name, make in made.items():
        make(tmp_path / name)
        paths.append(tmp_path / name)
    return paths


def test_plain_jpegs_go_to_the_gpu_the_rest_to_the_cpu_decoder(monkeypatch, files):
    """With the GPU path on (``available`` patched, the CPU standing in for CUDA), only the plain
    JPEGs are decoded by decode_jpeg; the batch is the CPU decoder's: the same files, order,
    failures with the same reasons, images, and model inputs within one level."""
    tv = need("torchvision.io")
    sent = []
    real = tv.decode_jpeg

    def spy(data, *args, device="cpu", **kwargs):
        sent.append((len(data), torch.device(device)))
        return real(data, *args, device=device, **kwargs)

    monkeypatch.setattr(gpu_jpeg, "available", lambda device: True)
    monkeypatch.setattr(tv, "decode_jpeg", spy)
    on_gpu = decode(files, 112, device=CPU)
    expected = decode(files, 112)
    assert sent[0] == (3, CPU)  # plain, cut (its header reads), small: one batched call
    assert on_gpu.paths == expected.paths == [files[i] for i in (0, 1, 2, 3, 4, 7)]
    assert [(f.path, f.reason) for f in on_gpu.failures] == [
        (f.path, f.reason) for f in expected.failures
    ]
    assert [f.path for f in on_gpu.failures] == [str(files[5]), str(files[6])]
    assert on_gpu.images[2].shape == (451, 300, 3)  # the phone photo upright, as on the CPU
    for got, want in zip(on_gpu.images, expected.images):
        assert np.array_equal(got, want)
    assert on_gpu.unit is not None and expected.unit is not None
    assert (on_gpu.unit - expected.unit).abs().max() * 255 <= 1.0 + 1e-4


def test_plain_jpeg_header_checks(chelsea, files):
    def plain(path, size=112):
        return gpu_jpeg.plain_jpeg(path.read_bytes(), size, 100_000_000, 4)

    assert [plain(p) for p in files] == [True, False, False, False, False, True, False, True]
    assert not plain(files[0], size=64)  # 300 px > 4 x 64: the CPU decodes it reduced (draft)
    assert not gpu_jpeg.plain_jpeg(files[0].read_bytes(), 112, 1000, 4)  # over the pixel limit


def test_no_gpu_decoding_off_cuda_or_where_it_fails(monkeypatch):
    assert not gpu_jpeg.available(CPU)
    monkeypatch.setattr(gpu_jpeg, "_AVAILABLE", {})
    monkeypatch.setattr(gpu_jpeg, "_decode", lambda datas, device: [None])  # nvJPEG refuses
    assert not gpu_jpeg.available(torch.device("cuda:0"))
    assert gpu_jpeg._AVAILABLE == {"cuda:0": False}
