"""Rendering detections, clips (animated GIF) and volumes (grid of slices)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import camlens
from camlens.visualize.tasks import (
    clip_overlays,
    detection_overlay,
    rescale_box,
    save_gif,
    slice_grid,
)


def _maps(count: int = 5, size: int = 16) -> torch.Tensor:
    return torch.rand(count, size, size, generator=torch.Generator().manual_seed(0))


def test_scale_box():
    assert rescale_box((10, 20, 30, 40), (100, 200), (50, 400)) == (20.0, 10.0, 60.0, 20.0)


def test_detection_overlay_draws_the_box_over_the_map():
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    heatmap = _maps(1)[0]
    out = detection_overlay(image, heatmap, (10, 30, 50, 60), "cat 90.0%")
    plain = camlens.overlay(image, heatmap)
    assert out.shape == (64, 64, 3)
    assert (out[45, 10] == (0, 255, 0)).all() and (out[45, 50] == (0, 255, 0)).all()
    assert (out[45, 30] == plain[45, 30]).all()  # inside the box: the overlay itself
    assert (out[29, 10:20] == (0, 255, 0)).any()  # the label band above the box
    assert (out[62:, :] == plain[62:, :]).all()  # below the box: untouched


def test_clip_as_animated_gif(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    overlays = clip_overlays(frames, _maps())
    for frame, heatmap, result in zip(frames, _maps(), overlays):
        assert (result == camlens.overlay(frame, heatmap)).all()
    save_gif(overlays, tmp_path / "clip.gif", fps=10)
    with Image.open(tmp_path / "clip.gif") as gif:
        assert gif.n_frames == 5 and gif.size == (16, 16) and gif.info["duration"] == 100
        gif.seek(2)
        decoded = np.asarray(gif.convert("RGB")).astype(int)
    assert np.abs(decoded - overlays[2]).mean() < 12  # GIF's 256-colour palette


def test_volume_as_grid_of_slices():
    volume = np.random.default_rng(1).random((5, 16, 16)).astype(np.float32)  # one channel
    grid = slice_grid(volume, _maps(), columns=3)
    assert grid.shape == (32, 48, 3)
    tile = camlens.overlay((volume[4] * 255 + 0.5).astype(np.uint8), _maps()[4])
    assert (grid[16:32, 16:32] == tile).all()
    assert (grid[16:32, 32:48] == 0).all()  # the sixth cell is empty
    assert slice_grid(volume, _maps()).shape == (32, 48, 3)  # ceil(sqrt(5)) = 3 columns


def test_frame_count_must_match():
    with pytest.raises(camlens.CamlensValueError) as error:
        clip_overlays(np.zeros((4, 16, 16), dtype=np.uint8), _maps())
    assert str(error.value) == "the maps have 5 frames but 4 pictures were given"
    with pytest.raises(camlens.CamlensValueError) as error:
        clip_overlays(np.zeros((16, 16), dtype=np.uint8), _maps())
    assert str(error.value) == (
        "expected 5 frames or slices as an array (T, H, W[, 3]) or a list of images, got ndarray"
    )
