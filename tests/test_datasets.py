import sys

import numpy as np
import pytest
import torch

from camlens import datasets
from camlens.datasets import _source, cluttered_digits, read_boxes, write_image_folder
from camlens.errors import CamlensValueError


def test_cluttered_digits_shapes_ranges_and_boxes():
    images, labels, boxes = cluttered_digits(12, size=64, seed=3)
    assert images.shape == (12, 3, 64, 64) and images.dtype == torch.float32
    assert labels.shape == (12,) and labels.dtype == torch.int64
    assert boxes.shape == (12, 4) and boxes.dtype == torch.int64
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(images[:, 0], images[:, 2])  # gray repeated over channels
    assert ((boxes >= 0) & (boxes <= 63)).all()
    assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
    sides = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) + 1
    assert ((sides >= 8) & (sides <= 28)).all()  # the tight ink box of a 20..28 px digit
    assert set(labels.tolist()) <= set(range(10))


def test_box_edges_touch_ink_and_the_digit_lies_on_top():
    images, _, boxes = cluttered_digits(8, seed=5, noise=0.0, fragments=0)
    for image, (x0, y0, x1, y1) in zip(images[:, 0], boxes.tolist()):
        ink = image > 0.25
        assert ink[y0 : y1 + 1, x0 : x1 + 1].sum() == ink.sum()  # all ink inside the box
        assert ink[y0, x0 : x1 + 1].any() and ink[y1, x0 : x1 + 1].any()  # tight rows
        assert ink[y0 : y1 + 1, x0].any() and ink[y0 : y1 + 1, x1].any()  # tight columns


def test_seeded_and_channels():
    a = cluttered_digits(4, size=48, seed=1, channels=1, scale=(12, 16))
    b = cluttered_digits(4, size=48, seed=1, channels=1, scale=(12, 16))
    c = cluttered_digits(4, size=48, seed=2, channels=1, scale=(12, 16))
    assert a[0].shape == (4, 1, 48, 48)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_train_and_test_digits_are_disjoint_stratified_thirds():
    train_images, train_labels = _source("train")
    test_images, test_labels = _source("test")
    assert len(train_labels) + len(test_labels) == 1797
    assert len(test_labels) == 599
    counts = torch.bincount(test_labels, minlength=10) / torch.bincount(
        torch.cat([train_labels, test_labels]), minlength=10
    )
    assert torch.allclose(counts, torch.full((10,), 1 / 3), atol=0.01)
    flat_train = {bytes(x.numpy().tobytes()) for x in train_images}
    shared = sum(bytes(x.numpy().tobytes()) in flat_train for x in test_images)
    assert shared <= 2  # scikit-learn's digits hold a few exact duplicates, nothing more


def test_write_and_read_back(tmp_path):
    from PIL import Image

    images, labels, boxes = cluttered_digits(5, seed=7)
    paths = write_image_folder(tmp_path, images, labels, boxes)
    assert [p.parent.name for p in paths] == [str(v) for v in labels.tolist()]
    read_paths, read_labels, read_boxes_ = read_boxes(tmp_path / "boxes.csv")
    assert read_paths == paths
    assert torch.equal(read_labels, labels) and torch.equal(read_boxes_, boxes)
    array = np.asarray(Image.open(paths[0]))
    assert array.shape == (64, 64) and array.dtype == np.uint8  # stored as 8-bit gray
    assert np.abs(array / 255.0 - images[0, 0].numpy()).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be a positive int, got 0"),
        ({"n": 2, "scale": (4, 10)}, "scale must be (low, high) with 8 <= low <= high <= size=64"),
        ({"n": 2, "digits": "val"}, "digits must be 'train', 'test' or 'all', got 'val'"),
        ({"n": 2, "channels": 2}, "channels must be 1 or 3, got 2"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(CamlensValueError) as info:
        cluttered_digits(**kwargs)
    assert message in str(info.value)


def test_missing_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(CamlensValueError, match=r"needs scikit-learn.*'camlens\[train\]'"):
        datasets.cluttered_digits(1)
