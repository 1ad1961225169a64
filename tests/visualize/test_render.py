"""Rendering: colormaps, overlays at the image's own size, labels, contours, panels."""

from __future__ import annotations

import sys

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from camlens.errors import CamlensValueError
from camlens.visualize.overlay import _table
from camlens.visualize.render import (
    colorize,
    colormap_table,
    contour_masks,
    draw_boxes,
    draw_contours,
    draw_label,
    label_text,
    overlay,
    panel,
)


def test_overlay_keeps_the_image_size_600x400():
    image = np.zeros((400, 600, 3), dtype=np.uint8)
    heatmap = torch.rand(7, 7, generator=torch.Generator().manual_seed(0))
    out = overlay(image, heatmap)
    assert out.shape == (400, 600, 3)
    assert out.dtype == np.uint8
    pil = Image.new("RGB", (600, 400))
    assert overlay(pil, heatmap.numpy(), colormap="viridis").shape == (400, 600, 3)


def test_colormap_typo_lists_valid_names():
    with pytest.raises(CamlensValueError) as error:
        overlay(np.zeros((8, 8, 3), np.uint8), torch.zeros(2, 2), colormap="jte")
    message = str(error.value)
    assert message.startswith("unknown colormap 'jte'; did you mean 'jet'")
    for name in ("jet", "turbo", "viridis", "inferno", "magma"):
        assert f" {name}," in message or f" {name} " in message


@pytest.mark.parametrize("name", ["jet", "turbo", "viridis", "inferno", "magma", "gray_r"])
def test_tables_are_matplotlibs(name):
    expected = matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3]
    np.testing.assert_allclose(colormap_table(name), expected, atol=1e-12)
    values = torch.tensor([[0.0, 1.0], [0.5, 128 / 255]])
    colours = colorize(values, name)
    np.testing.assert_array_equal(colours[0, 0], np.round(expected[0] * 255).astype(np.uint8))
    np.testing.assert_array_equal(colours[0, 1], np.round(expected[255] * 255).astype(np.uint8))
    np.testing.assert_array_equal(colours[1, 1], np.round(expected[128] * 255).astype(np.uint8))


def test_jet_without_matplotlib(monkeypatch):
    expected = matplotlib.colormaps["jet"](np.linspace(0, 1, 256))[:, :3]
    _table.cache_clear()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    try:
        np.testing.assert_allclose(colormap_table("jet"), expected, atol=1e-12)
        with pytest.raises(CamlensValueError, match="colormap 'viridis' needs matplotlib"):
            colormap_table("viridis")
    finally:
        _table.cache_clear()


def test_colorize_is_batched():
    maps = torch.rand(3, 5, 6, generator=torch.Generator().manual_seed(1))
    batch = colorize(maps, "turbo")
    assert batch.shape == (3, 5, 6, 3)
    for i in range(3):
        np.testing.assert_array_equal(batch[i], colorize(maps[i], "turbo"))


def test_overlay_blend_and_threshold_exact():
    image = np.full((4, 6, 3), 100, dtype=np.uint8)
    heatmap = torch.tensor([[1.0, 1.0, 0.1], [1.0, 1.0, 0.1]])  # resized to 4x6 below
    out = overlay(image, heatmap, colormap="jet", alpha=0.25, threshold=0.2)
    # jet(1.0) = (0.5, 0, 0): 0.75 * 100 + 0.25 * 127.5 = 106.875 -> 107; 0.75 * 100 = 75
    np.testing.assert_array_equal(out[:, 0], [[107, 75, 75]] * 4)
    # below the threshold the image is untouched
    np.testing.assert_array_equal(out[:, 5], [[100, 100, 100]] * 4)
    no_threshold = overlay(image, heatmap, colormap="jet", alpha=0.25)
    assert not np.array_equal(no_threshold[:, 5], out[:, 5])


def test_overlay_rejects_bad_alpha_and_shape():
    with pytest.raises(CamlensValueError, match=r"alpha must be a number in \[0, 1\], got 1.5"):
        overlay(np.zeros((4, 4, 3), np.uint8), torch.zeros(2, 2), alpha=1.5)
    with pytest.raises(
        CamlensValueError, match=r"expected heatmap of shape \(H, W\), got \(1, 2, 2\)"
    ):
        overlay(np.zeros((4, 4, 3), np.uint8), torch.zeros(1, 2, 2))


def test_label_text():
    assert label_text("dog", 0.97312) == "dog 97.3%"
    assert label_text("dog", float("nan")) == "dog"


@pytest.mark.parametrize(("height", "width"), [(48, 64), (1500, 2000)])
def test_label_scales_with_the_image(height, width):
    image = np.full((height, width, 3), 200, dtype=np.uint8)
    out = draw_label(image, "dog 97.3%")
    changed = np.argwhere((out != image).any(axis=2))
    band_height = changed[:, 0].max() + 1
    assert changed[:, 0].min() == 0 and changed[:, 1].min() == 0  # the band starts at the corner
    # text is about 6% of the short side (at least 10 px), so the band is readable but small
    assert max(10, 0.06 * height) <= band_height <= max(24, 0.15 * height)
    assert (out[band_height:] == 200).all()
    text = out[:band_height].min(axis=2) > 180  # light text on the dark band
    assert text.sum() >= 20


def test_contours_of_a_disc():
    yy, xx = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    radius = ((yy - 20) ** 2 + (xx - 20) ** 2).sqrt()
    heatmap = (1 - radius / 20).clamp(0, 1)  # cone: value 0.5 at radius 10
    masks = contour_masks(heatmap, [0.5])
    assert masks.shape == (1, 41, 41)
    on = radius[masks[0]]
    assert on.min() >= 10 - 2**0.5 and on.max() <= 10.0001  # inside, an 8-neighbour outside
    out = draw_contours(np.zeros((41, 41, 3), np.uint8), heatmap, [0.5])
    assert ((out == 255).all(axis=2) == masks[0].numpy()).all()


def test_draw_boxes_inclusive_corners():
    out = draw_boxes(np.zeros((20, 30, 3), np.uint8), [(2, 3, 10, 12)], width=1)
    ys, xs = np.nonzero(out[..., 1])
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (2, 3, 10, 12)


def test_panel_png(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    heat = torch.rand(7, 7, generator=torch.Generator().manual_seed(2))
    rows = [(m, heat, overlay(image, heat)) for m in ("gradcam", "cam")]
    panel(image, rows, tmp_path / "panel.png", title="cat 90.0%")
    with Image.open(tmp_path / "panel.png") as picture:
        assert picture.size[0] == 900
        assert picture.size[1] > 300  # two rows
