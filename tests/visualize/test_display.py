"""An Explanation in a notebook: original | heatmap | overlay per image, class and probability."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import torch
from PIL import Image
from toy_models import SmallCNN

import camlens
from camlens.visualize.display import SHOWN
from camlens.visualize.figures import input_images


def explain(n: int) -> camlens.Explanation:
    x = torch.rand(n, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    return camlens.explain(SmallCNN(classes=3).eval(), x, method="gradcam")


def test_html_shows_original_heatmap_and_overlay():
    exp = explain(2)
    text = exp._repr_html_()
    assert "<code>Explanation(method=&#x27;gradcam&#x27;, layer=&#x27;features&#x27;" in text
    pictures = [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(p))))
        for p in re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    ]
    assert len(pictures) == 6
    original = input_images(exp)[1]
    np.testing.assert_array_equal(pictures[3], original)
    np.testing.assert_array_equal(pictures[4], camlens.visualize.render.colorize(exp.maps[1]))
    np.testing.assert_array_equal(pictures[5], camlens.overlay(original, exp.maps[1]))
    caption = f"class {int(exp.targets[1])} {float(exp.probs[1]) * 100:.1f}%"
    assert f"<td>1</td><td>{caption}</td>" in text


def test_html_and_png_show_the_first_images_only():
    exp = explain(SHOWN + 2)
    text = exp._repr_html_()
    assert text.count("<img ") == 3 * SHOWN and "&hellip; and 2 more" in text
    picture = Image.open(io.BytesIO(exp._repr_png_()))
    assert picture.format == "PNG" and picture.size[0] == 3 * 250
    assert picture.size[1] > SHOWN * 200  # one row per shown image


def test_png_without_inputs_shows_heatmaps():
    exp = camlens.Explanation(**{**explain(2).__dict__, "inputs": None})
    assert exp._repr_html_().count("<img ") == 2  # heatmaps only
    picture = Image.open(io.BytesIO(exp._repr_png_()))
    assert picture.size[0] == 300  # one 3-inch column at 100 dpi


def test_a_clip_shows_its_middle_frame():
    exp = explain(2)
    maps = torch.rand(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    clip = camlens.Explanation(**{**exp.__dict__, "maps": maps, "inputs": None})
    text = clip._repr_html_()
    (first, _) = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(first))))
    np.testing.assert_array_equal(picture, camlens.visualize.render.colorize(maps[0, 2]))
    assert Image.open(io.BytesIO(clip._repr_png_())).format == "PNG"
