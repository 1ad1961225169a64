"""Paths to decoded batches: collecting inputs, reading images, streaming, folder labels."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from camlens.app.engine import output_names
from camlens.app.inputs import (
    class_indices,
    collect,
    decode,
    folder_labels,
    image_files,
    read_image,
    stream,
)
from camlens.app.session import resize_unit
from camlens.errors import CamlensValueError


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
    files, failures = collect(
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
        "a/b/two.png",
        "a/one.png",
    ]
    assert [(f.path, f.reason) for f in failures] == [
        (str(tree / "missing.png"), "no such file or folder"),
        (str(tree / "*.nothing"), "no file matches this pattern"),
    ]


def test_output_names_disambiguate_shared_stems(tree):
    files, _ = collect([tree / "a"])
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
    files, _ = collect([tmp_path / "val", tmp_path / "other" / "cat" / "4.png"])
    labels = folder_labels(files, [tmp_path / "val", tmp_path / "other" / "cat" / "4.png"])
    assert {f.relative_to(tmp_path).as_posix(): c for f, c in labels.items()} == {
        "val/cat/x/2.png": "cat",
        "val/dog/1.png": "dog",
    }
    # ImageFolder order without names, the model's own names where they all match
    assert class_indices(["dog", "cat"], None) == {"cat": 0, "dog": 1}
    assert class_indices(["dog", "cat"], ["Dog", "bird", "cat"]) == {"cat": 2, "dog": 0}
    assert class_indices(["dog", "n0123"], ["dog", "cat"]) == {"dog": 0, "n0123": 1}


def test_image_files_errors(tmp_path):
    with pytest.raises(CamlensValueError, match=r"^--data '.*nope' is not a folder of images$"):
        image_files(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CamlensValueError, match=r"holds no images \(\.bmp, \.gif"):
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


def test_output_names_are_distinct_after_sanitising_and_stable(tmp_path):
    files = [tmp_path / name for name in ("a b.png", "a_b.png", "a<b.png", "A_B.jpg", "c.png")]
    names = output_names(files)
    assert len(set(names.values())) == 5 and names[tmp_path / "c.png"] == "c"
    assert all(re.fullmatch(r"[aA]_[bB]-[0-9a-f]{8}", names[f]) for f in files[:4])
    assert output_names(files[::-1]) == names  # the same inputs, the same names
