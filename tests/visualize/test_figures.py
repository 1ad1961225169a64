"""camlens.plot: a grid of images by methods, the cells being exactly what camlens renders."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from toy_models import SmallCNN

import camlens
from camlens.visualize.figures import input_images

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 48, 64, 3), generator=generator, dtype=torch.uint8)
    images[:, 0, 0] = 0  # every channel spans 0..255, so min-max undoes the normalisation
    images[:, 0, 1] = 255
    x = ((images.permute(0, 3, 1, 2).float() / 255.0) - MEAN) / STD
    model = SmallCNN(classes=3).eval()
    exps = [camlens.explain(model, x, method=m) for m in ("gradcam", "cam")]
    return [i.numpy() for i in images], x, exps


def test_grid_of_images_by_methods(batch):
    images, _, exps = batch
    figure = camlens.plot(images, exps, kinds=("heatmap", "overlay"), labels=["a", "b", "c"])
    assert isinstance(figure, Figure)
    assert figure._repr_png_().startswith(b"\x89PNG")  # a notebook shows it, without pyplot
    axes = figure.axes
    assert len(axes) == 2 * (1 + 2 * 2)  # two images; original + (heatmap, overlay) per method
    first = axes[:5]
    assert [a.get_title() for a in first][:2] == ["original", "gradcam heatmap"]
    name = ["a", "b", "c"][int(exps[0].targets[0])]
    probability = float(exps[0].probs[0]) * 100
    assert first[2].get_title() == f"gradcam: {name} {probability:.1f}%"
    assert first[4].get_title().startswith("cam: ")
    np.testing.assert_array_equal(first[0].images[0].get_array(), images[0])
    np.testing.assert_array_equal(first[1].images[0].get_array(), exps[0].maps[0].numpy())
    assert first[1].images[0].get_extent() == [0, 64, 48, 0]  # the map spans the image
    expected = camlens.overlay(images[0], exps[0].maps[0])
    np.testing.assert_array_equal(first[2].images[0].get_array(), expected)
    second = axes[5:]
    blended = camlens.overlay(images[1], exps[1].maps[1], "turbo", 0.3, 0.2)
    figure = camlens.plot(images, exps[1], colormap="turbo", alpha=0.3, threshold=0.2)
    assert len(figure.axes) == 4 and second[0].get_title() == "original"
    np.testing.assert_array_equal(figure.axes[3].images[0].get_array(), blended)
    assert figure.axes[1].get_title() == f"cam: class {int(exps[1].targets[0])} " + (
        f"{float(exps[1].probs[0]) * 100:.1f}%"
    )


def test_inputs_are_kept_and_shown_unnormalised(batch):
    images, x, exps = batch
    assert torch.equal(exps[0].inputs, x)
    shown = input_images(exps[0])
    assert len(shown) == 2 and shown[0].dtype == np.uint8
    assert np.abs(shown[0].astype(int) - images[0].astype(int)).max() <= 1
    figure = camlens.plot(None, exps[0])
    np.testing.assert_array_equal(figure.axes[0].images[0].get_array(), shown[0])


def test_bad_arguments(batch):
    images, _, exps = batch
    with pytest.raises(camlens.CamlensValueError) as error:
        camlens.plot(images[:1], exps)
    assert str(error.value) == (
        "explanations: expected 1 maps each, one per image, got gradcam: 2, cam: 2"
    )
    with pytest.raises(camlens.CamlensValueError) as error:
        camlens.plot(images, exps, kinds=("map",))
    assert str(error.value) == (
        "kinds: expected a non-empty sequence of 'heatmap', 'overlay', got ('map',)"
    )
    with pytest.raises(camlens.CamlensValueError, match=r"^explanations: expected an Explanation"):
        camlens.plot(images, [])
    bare = camlens.Explanation(**{**exps[0].__dict__, "inputs": None})
    with pytest.raises(camlens.CamlensValueError) as error:
        camlens.plot(None, bare)
    assert str(error.value) == (
        "images: this explanation keeps no (B, 1 or 3, H, W) input (got None); "
        "pass the images, e.g. camlens.plot(images, exp)"
    )


def test_without_matplotlib(batch, monkeypatch):
    images, _, exps = batch
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    camlens.visualize.figures._figure_class.cache_clear()
    with pytest.raises(camlens.CamlensImportError) as error:
        camlens.plot(images, exps)
    assert isinstance(error.value, ImportError)
    assert "pip install matplotlib" in str(error.value)
    assert exps[0]._repr_png_() is None  # a notebook falls back to the HTML
    assert exps[0]._repr_html_().count("<img ") == 6
