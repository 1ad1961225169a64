"""The batch job's pieces: collecting inputs, reading images, names, results files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from camlens.io import IMAGENET_MEAN, IMAGENET_STD
from camlens.runner import (
    batches,
    collect,
    output_names,
    read_image,
    read_results,
    to_batch,
    write_csv,
)


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


def test_to_batch_resizes_whole_images_and_normalises():
    images = [np.full((40, 60, 3), 255, np.uint8), np.zeros((10, 5, 3), np.uint8)]
    x = to_batch(images, 16)
    assert x.shape == (2, 3, 16, 16)
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[0, :, 3, 7], white, atol=1e-5)
    assert torch.allclose(x[1, :, 0, 0], -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD))


def test_batches_in_background_keep_order_and_failures(tree, tmp_path):
    (tmp_path / "bad.png").write_text("no")
    files = [tree / "a" / "b" / "one.png", tree / "a" / "b" / "two.png", tmp_path / "bad.png"]
    got = list(batches(files, 2, 8))
    assert [b.paths for b in got] == [files[:2], []]
    assert got[1].failures[0].path == str(tmp_path / "bad.png")
    assert got[0].x.shape == (2, 3, 8, 8)


def test_results_survive_a_truncated_line(tmp_path):
    line = {"path": "/a.jpg", "method": "cam", "boxes": [[1, 2, 3, 4]], "seconds": {"load": 0.1}}
    (tmp_path / "results.jsonl").write_text(json.dumps(line) + "\n" + '{"path": "/b.j')
    records = read_results(tmp_path)
    assert records == [line]
    write_csv(tmp_path, records)
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows[0].startswith("path,method,layer,predicted")
    assert rows[1].startswith("/a.jpg,cam,") and '"[[1, 2, 3, 4]]"' in rows[1]
