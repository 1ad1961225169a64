"""Boxes from maps: the CAM paper's rule, every component, connectivity, image coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

import camlens
from camlens.errors import CamlensValueError
from camlens.visualize.boxes import boxes, components


def blobs() -> torch.Tensor:
    """A 48x64 map: a big blob (peak 1.0), a small one (0.5), faint noise below 20% of the max."""
    heat = torch.full((48, 64), 0.05)
    heat[10:30, 5:25] = 0.8  # 20 x 20 = 400 pixels: x 5..24, y 10..29
    heat[15, 15] = 1.0
    heat[35:40, 50:60] = 0.5  # 5 x 10 = 50 pixels: x 50..59, y 35..39
    heat[2, 40:43] = 0.19  # below 0.2 * max: not part of any box
    return heat


def test_cam_paper_rule_largest_component():
    assert camlens.boxes(blobs()) == [(5, 10, 24, 29)]
    assert boxes(blobs().numpy(), threshold=0.2) == [(5, 10, 24, 29)]


def test_every_component_above_min_area():
    assert boxes(blobs(), largest=False) == [(5, 10, 24, 29), (50, 35, 59, 39)]
    assert boxes(blobs(), largest=False, min_area=51) == [(5, 10, 24, 29)]
    # at 0.15 of the max the faint 3-pixel line joins as a third component
    assert boxes(blobs(), 0.15, largest=False) == [
        (5, 10, 24, 29),
        (50, 35, 59, 39),
        (40, 2, 42, 2),
    ]
    # above 0.6 of the max only the big blob is left
    assert boxes(blobs(), 0.6, largest=False) == [(5, 10, 24, 29)]


def test_threshold_is_relative_to_the_max():
    assert boxes(blobs() * 7.5) == [(5, 10, 24, 29)]
    assert boxes(torch.zeros(8, 8)) == []


def test_connectivity():
    heat = torch.zeros(6, 6)
    heat[1, 1] = heat[2, 2] = heat[3, 3] = 1.0  # a diagonal: one component with 8, three with 4
    assert boxes(heat, largest=False) == [(1, 1, 3, 3)]
    assert boxes(heat, largest=False, connectivity=4) == [(1, 1, 1, 1), (2, 2, 2, 2), (3, 3, 3, 3)]
    with pytest.raises(CamlensValueError, match="connectivity must be 4 or 8, got 6"):
        boxes(heat, connectivity=6)


def test_boxes_in_image_pixels():
    heat = torch.zeros(8, 8)
    heat[2:4, 1:6] = 1.0  # map pixels x 1..5, y 2..3
    # an 80 x 160 image (H, W): a map cell is 10 rows by 20 columns
    assert boxes(heat, size=(80, 160)) == [(20, 20, 119, 39)]
    assert boxes(heat, size=(8, 8)) == [(1, 2, 5, 3)]


def test_batched():
    batch = torch.stack([blobs(), blobs().flip(1)])
    assert boxes(batch) == [[(5, 10, 24, 29)], [(39, 10, 58, 29)]]


def test_bad_input():
    with pytest.raises(CamlensValueError, match=r"got \(5,\)"):
        boxes(torch.zeros(5))
    with pytest.raises(CamlensValueError, match=r"threshold must be in \[0, 1\]"):
        boxes(torch.zeros(4, 4), threshold=20)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_components_agree_with_scipy(connectivity):
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(4, 40, 50, generator=generator) > 0.55
    labels = components(masks, connectivity)
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    for mask, ours in zip(masks.numpy(), labels.numpy()):
        theirs, count = ndimage.label(mask, structure=structure)
        assert len(np.unique(ours[mask])) == count
        # the same partition: each scipy component is exactly one of ours
        pairs = set(zip(theirs[mask].tolist(), ours[mask].tolist()))
        assert len(pairs) == count


def test_spiral_converges():
    """A one-pixel-wide snake (the worst case for label propagation) is one component."""
    mask = torch.zeros(1, 31, 31, dtype=torch.bool)
    mask[0, ::2, :] = True
    mask[0, 1::4, -1] = True
    mask[0, 3::4, 0] = True
    labels = components(mask, 4)
    assert labels[mask].unique().numel() == 1
