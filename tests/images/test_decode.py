"""Paths to decoded batches: collecting inputs, reading images, streaming, folder labels."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from camlens.errors import CamlensValueError
from camlens.images.decode import (
    class_indices,
    collect,
    decode,
    folder_labels,
    image_files,
    read_image,
    stream,
)
from camlens.runs.local import output_names
from camlens.runs.session import resize_unit


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ("a/one.png", "a/b/two.png", "a/b/one.png", ".hidden/x.png", "a/.dot.png"):
        Image.new("RGB", (10, 8), (255, 0, 0)).save(tmp_path / name)
    (tmp_path / "out").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "out" / "overlay.png")
    return tmp_path


def test_collect_files_folders_globs(tree):
    (tree / "a" / "notes.txt").write_text("not an image")
    (tree / "a" / "b" / "scan.TIF").write_bytes(b"")
    files, failures, ignored = collect(
        [
            tree / "a",
            str(tree / "a" / "**" / "two.png"),
            tree / "missing.png",
            str(tree / "*.nothing"),
            tree,
        ],
        exclude=tree / "out",
    )
    assert [f.relative_to(tree).as_posix() for f in files] == [
        "a/b/one.png",
        "a/b/scan.TIF",
        "a/b/two.png",
        "a/one.png",
    ]
    assert ignored == 1  # a/notes.txt, counted once though the folder is given twice
    assert [(f.path, f.reason) for f in failures] == [
        (str(tree / "missing.png"), "no such file or folder"),
        (str(tree / "*.nothing"), "no file matches this pattern"),
    ]


def test_output_names_disambiguate_shared_stems(tree):
    files, _, _ = collect([tree / "a"])
    names = output_names(files)
    assert sorted(names.values()) == ["b__one.png", "one.png", "two"]


def test_read_image_reasons(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    Image.new("RGB", (64, 64)).save(tmp_path / "ok.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes()[:200])
    with pytest.raises(ValueError, match=r"^empty file \(0 bytes\)$"):
        read_image(tmp_path / "empty.jpg")
    with pytest.raises(ValueError, match=r"^not an image \(Pillow cannot identify its format\)$"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match=r"^corrupt or truncated image"):
        read_image(tmp_path / "cut.jpg")
    image = read_image(tmp_path / "ok.jpg")
    assert image.shape == (64, 64, 3) and image.flags.writeable


def test_resize_unit_is_pillows_bilinear_of_the_whole_image():
    ramp = np.tile(np.arange(0, 240, 4, dtype=np.uint8), (40, 1))  # 40x60, left to right
    image = np.stack([ramp, 255 - ramp, np.full_like(ramp, 7)], axis=2)
    x = resize_unit(image, 16)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    expected = np.array(Image.fromarray(image).resize((16, 16), Image.Resampling.BILINEAR))
    assert torch.equal(x, torch.from_numpy(expected).permute(2, 0, 1).float() / 255)
    # the whole image, squeezed: the first and last columns keep the ramp's ends
    assert x[0, 0, 0] < 0.05 and x[0, 0, -1] > 0.85 and torch.allclose(x[2], torch.tensor(7 / 255))
    white = np.full((10, 10, 3), 255, np.uint8)
    assert torch.equal(resize_unit(white, 10), torch.ones(3, 10, 10))


def test_stream_decodes_ahead_in_order_with_failures(tree, tmp_path):
    (tmp_path / "bad.png").write_text("no")
    files = [tree / "a" / "b" / "one.png", tree / "a" / "b" / "two.png", tmp_path / "bad.png"]
    got = list(stream(files, 2, 8))
    assert [b.paths for b in got] == [files[:2], []]
    assert got[1].failures[0].path == str(tmp_path / "bad.png") and got[1].unit is None
    assert got[0].unit.shape == (2, 3, 8, 8) and got[0].images[0].shape == (8, 10, 3)
    assert torch.allclose(got[0].unit[:, 0], torch.ones(2, 8, 8))  # the red images
    assert list(stream([], 2, 8)) == []


def test_stream_holds_at_most_ahead_batches(tmp_path):
    started = []

    def slow_read(paths, size):
        started.append(paths[0])
        return decode([], size)

    files = [tmp_path / f"{i}.png" for i in range(20)]
    iterator = stream(files, 1, 8, workers=2, ahead=2, read=slow_read)
    next(iterator)
    assert len(started) <= 4  # the one consumed, two ahead, and one submitted after it
    iterator.close()


def test_folder_labels_and_their_class_indices(tmp_path):
    for name in ("val/dog/1.png", "val/cat/x/2.png", "val/3.png", "other/cat/4.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    files, _, _ = collect([tmp_path / "val", tmp_path / "other" / "cat" / "4.png"])
    labels = folder_labels(files, [tmp_path / "val", tmp_path / "other" / "cat" / "4.png"])
    assert {f.relative_to(tmp_path).as_posix(): c for f, c in labels.items()} == {
        "val/cat/x/2.png": "cat",
        "val/dog/1.png": "dog",
    }
    # the model's own names, case- and separator-insensitively
    assert class_indices(["dog", "cat"], ["Dog", "bird", "cat"], 3) == {"cat": 2, "dog": 0}
    names = ["tench", "golden retriever", "Great-Dane"]
    folders = ["golden_retriever", "Golden-Retriever", "great dane", "TENCH"]
    assert class_indices(folders, names, 3) == {
        "Golden-Retriever": 1, "TENCH": 0, "golden_retriever": 1, "great dane": 2
    }  # fmt: skip


def test_a_folder_that_is_no_class_is_an_error_not_a_shifted_index():
    names = ["cat", "dog", "golden retriever"]
    with pytest.raises(CamlensValueError) as raised:
        class_indices(["cat", "dog", "misc", "golden_retreiver"], names, 3)
    assert str(raised.value) == (
        "--labels-from-folders: 2 class folder(s) match no class name of the model: "
        "'golden_retreiver' (closest: 'golden retriever'), 'misc'; rename them, leave them out, "
        "or pass --class-map FILE (folder -> class name or index)"
    )
    # a class map says what they are: by name or by index
    mapped = class_indices(["cat", "misc", "Puppy"], names, 3, {"misc": 2, "puppy": "Dog"})
    assert mapped == {"Puppy": 1, "cat": 0, "misc": 2}
    with pytest.raises(CamlensValueError, match=r"^--class-map: 'misc' -> 'horse' is no class"):
        class_indices(["misc"], names, 3, {"misc": "horse"})
    with pytest.raises(CamlensValueError, match=r"^--class-map: 'misc' -> 7 is out of range"):
        class_indices(["misc"], names, 3, {"misc": 7})


def test_a_model_without_names_takes_sorted_folders_only_when_they_are_its_classes():
    notes = []
    assert class_indices(["dog", "cat"], None, 2, echo=notes.append) == {"cat": 0, "dog": 1}
    assert notes == [
        "note: the model has no class names: the 2 class folders are taken in sorted order as "
        "classes 0..1 (cat, dog); pass --labels FILE or --class-map FILE to say otherwise"
    ]
    with pytest.raises(CamlensValueError) as raised:
        class_indices(["dog", "cat"], None, 10)
    assert str(raised.value) == (
        "--labels-from-folders: 2 class folders but the model has 10 classes and no class names; "
        "pass --labels FILE (its class names) or --class-map FILE (folder -> class index)"
    )
    assert class_indices(["dog", "cat"], None, 10, {"cat": 3, "dog": 5}) == {"cat": 3, "dog": 5}


def test_class_map_files(tmp_path):
    from camlens.images.labels import load_class_map

    (tmp_path / "map.json").write_text('{"misc": "dog", "kitten": 0}')
    (tmp_path / "map.csv").write_text("folder,class\nmisc,dog\nkitten,0\n")
    (tmp_path / "map.tsv").write_text("misc\tgolden retriever\n\nkitten\t0\n")
    assert load_class_map(tmp_path / "map.json") == {"misc": "dog", "kitten": 0}
    assert load_class_map(tmp_path / "map.csv") == {"misc": "dog", "kitten": 0}
    assert load_class_map(tmp_path / "map.tsv") == {"misc": "golden retriever", "kitten": 0}
    (tmp_path / "bad.csv").write_text("misc\n")
    with pytest.raises(CamlensValueError, match=r"^--class-map '.*bad.csv' line 1: expected two"):
        load_class_map(tmp_path / "bad.csv")
    (tmp_path / "bad.json").write_text('["dog"]')
    with pytest.raises(CamlensValueError, match=r"^--class-map '.*bad.json': expected a JSON obj"):
        load_class_map(tmp_path / "bad.json")


def test_collect_reports_unreadable_folders_and_files(tmp_path, monkeypatch):
    import os

    for name in ("ok/a.png", "ok/locked/b.png", "c.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    real_scandir, real_stat = os.scandir, os.stat

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    def stat(path, *args, **kwargs):
        if os.fspath(path).endswith("c.png"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    files, failures, ignored = collect([tmp_path / "ok"])
    assert [f.name for f in files] == ["a.png"] and ignored == 0
    assert [(f.path, f.reason) for f in failures] == [
        (str(tmp_path / "ok" / "locked"), "permission denied")
    ]
    monkeypatch.setattr(os, "stat", stat)
    files, failures, _ = collect([tmp_path / "c.png"])
    assert files == [] and [(f.path, f.reason) for f in failures] == [
        (str(tmp_path / "c.png"), "permission denied")
    ]


def test_image_files_errors(tmp_path):
    with pytest.raises(CamlensValueError, match=r"^--data '.*nope' is not a folder of images$"):
        image_files(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CamlensValueError, match=r"holds no images \(\.avif, \.bmp, "):
        image_files(tmp_path)


def test_a_patched_image_open_that_wants_a_plugin_is_still_a_bad_file(tmp_path, monkeypatch):
    """ultralytics replaces Image.open on import with one that tries to import a HEIF plugin
    when Pillow cannot identify a file: that file is still reported, not a crash."""
    (tmp_path / "notes.txt").write_text("hello")

    def patched(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'pi_heif'")

    monkeypatch.setattr(Image, "open", patched)
    with pytest.raises(ValueError, match=r"^not an image \(Pillow cannot identify its format: No"):
        read_image(tmp_path / "notes.txt")


# ---------------------------------------------------------------- one decode for every reader
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 0 moveto 10 10 lineto stroke\n"


def rotated_jpeg(path, orientation=6):
    """A 40x20 JPEG with EXIF orientation ``orientation``; returns its stored (unrotated) pixels."""
    ramp = np.linspace(0, 255, 20 * 40 * 3).reshape(20, 40, 3).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(ramp).save(path, quality=95, exif=exif)
    with Image.open(path) as stored:
        return np.array(stored.convert("RGB"))


def test_read_image_applies_exif_orientation(tmp_path):
    stored = rotated_jpeg(tmp_path / "phone.jpg")
    image = read_image(tmp_path / "phone.jpg")
    assert stored.shape == (20, 40, 3) and image.shape == (40, 20, 3)
    assert np.array_equal(image, np.rot90(stored, k=-1))  # orientation 6: turn 90 degrees clockwise
    assert np.array_equal(read_image((tmp_path / "phone.jpg").read_bytes()), image)


def test_read_image_refuses_eps_at_once_without_ghostscript(tmp_path, monkeypatch):
    import subprocess
    import time

    def no_programs(*args, **kwargs):
        raise AssertionError("read_image started a program")

    monkeypatch.setattr(subprocess, "Popen", no_programs)
    (tmp_path / "trap.jpg").write_bytes(EPS)
    begin = time.perf_counter()
    for source in (tmp_path / "trap.jpg", EPS):
        with pytest.raises(ValueError, match=r"^not a supported image format \(EPS\)$"):
            read_image(source)
    assert time.perf_counter() - begin < 1.0
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"  # an iPhone photo's first bytes
    with pytest.raises(ValueError, match=r"^not a supported image format \(HEIF: install pillow-h"):
        read_image(heic)


def test_read_image_16_bit_without_float_copies(tmp_path):
    import tracemalloc

    values = np.array([[0, 257, 257 * 128, 65535, 300]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png")[0, :, 0].tolist() == [0, 1, 128, 255, 1]
    big = np.tile(np.arange(2000, dtype=np.uint16) * 32, (2000, 1))  # 8 MB of 16-bit pixels
    Image.fromarray(big).save(tmp_path / "big.png", compress_level=1)
    tracemalloc.start()
    try:
        image = read_image(tmp_path / "big.png")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert image.shape == (2000, 2000, 3) and image[0, 1999, 0] == (1999 * 32) >> 8
    assert peak < 3 * big.nbytes, f"peak {peak / 1e6:.1f} MB for {big.nbytes / 1e6:.1f} MB"


def test_read_image_pixel_limit_from_the_header(tmp_path, monkeypatch):
    from PIL import ImageFile

    Image.new("L", (3000, 2000)).save(tmp_path / "wide.png")
    loaded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loaded.append(self))
    with pytest.raises(
        ValueError, match=r"^too large: 3000x2000 = 6.0 Mpx, over the limit of 5.0 Mpx$"
    ):
        read_image(tmp_path / "wide.png", max_pixels=5_000_000)
    assert loaded == []  # refused before decoding


def test_read_image_no_decompression_bomb_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40x40 is over Pillow's warning level
    Image.new("RGB", (40, 40), (9, 8, 7)).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png")[0, 0].tolist() == [9, 8, 7]  # filterwarnings=error
    Image.new("RGB", (50, 50)).save(tmp_path / "b.png")  # over twice Pillow's limit: an error
    with pytest.raises(ValueError, match=r"^too large: 2500 pixels, over Pillow's limit of 2000"):
        read_image(tmp_path / "b.png")


def test_read_image_drafts_large_jpegs_only(tmp_path):
    Image.new("RGB", (1000, 800), (200, 30, 40)).save(tmp_path / "big.jpg")
    assert read_image(tmp_path / "big.jpg").shape == (800, 1000, 3)
    assert read_image(tmp_path / "big.jpg", size=300).shape == (800, 1000, 3)  # under 4x the side
    small = read_image(tmp_path / "big.jpg", size=100)  # 8x the side: 1/4 scale, at least 200
    assert small.shape == (200, 250, 3)
    assert np.abs(small.astype(int) - [200, 30, 40]).max() <= 3
    Image.new("RGB", (1000, 800)).save(tmp_path / "big.png")
    assert read_image(tmp_path / "big.png", size=100).shape == (800, 1000, 3)  # JPEG only


def test_a_drafted_decode_stays_close_to_a_full_decode_and_resize(tmp_path):
    """The model sees nearly the same pixels: chelsea at 902x600 (a JPEG over 4x the side 64),
    drafted to 1/4 and resized to 64x64, against the full decode resized (both bilinear)."""
    from skimage import data

    Image.fromarray(data.chelsea()).resize((902, 600)).save(tmp_path / "cat.jpg", quality=90)
    drafted = read_image(tmp_path / "cat.jpg", size=64)
    assert drafted.shape == (150, 226, 3)  # 1/4: at least twice the side
    full = read_image(tmp_path / "cat.jpg")

    def resized(pixels: np.ndarray) -> np.ndarray:
        image = Image.fromarray(pixels).resize((64, 64), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.float64)

    difference = np.abs(resized(drafted) - resized(full))
    assert difference.mean() < 2 and difference.max() < 24  # measured 0.91 and 10


def test_read_image_os_errors_say_what_happened(tmp_path, monkeypatch):
    from camlens.images import decode as inputs

    Image.new("RGB", (8, 8)).save(tmp_path / "locked.png")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(inputs, "open", denied, raising=False)
    with pytest.raises(ValueError, match=r"^permission denied$"):
        read_image(tmp_path / "locked.png")


def test_imagenet_class_folders_by_wordnet_id():
    from camlens.images.labels import imagenet_classes

    names = list(imagenet_classes())
    got = class_indices(["n01484850", "n15075141", "tench"], names, 1000)
    assert got == {"n01484850": 2, "n15075141": 999, "tench": 0}  # a subset keeps its indices
    with pytest.raises(CamlensValueError, match=r"'n01484850'"):
        class_indices(["n01484850"], ["cat", "dog"], 2)  # other models: no WordNet ids


def test_output_names_are_distinct_after_sanitising_and_stable(tmp_path):
    files = [tmp_path / name for name in ("a b.png", "a_b.png", "a<b.png", "A_B.jpg", "c.png")]
    names = output_names(files)
    assert len(set(names.values())) == 5 and names[tmp_path / "c.png"] == "c"
    assert all(re.fullmatch(r"[aA]_[bB]-[0-9a-f]{8}", names[f]) for f in files[:4])
    assert output_names(files[::-1]) == names  # the same inputs, the same names
