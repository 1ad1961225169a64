"""Post-processing: min-max, upsampling, rectification."""

from __future__ import annotations

import pytest
import torch

import camlens
from camlens.maps import finalize, upsample


def test_minmax_constant_map_is_zeros_and_tiny_values_are_exact():
    maps = torch.stack([torch.full((2, 2), 7.0), torch.tensor([[0.0, 1e-11], [2e-11, 4e-11]])])
    out = camlens.minmax(maps)
    assert out[0].abs().max() == 0
    torch.testing.assert_close(out[1], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))


def test_finalize_rectifies_upsamples_and_normalises():
    raw = torch.tensor([[[-1.0, 1.0], [2.0, 3.0]]])
    maps = finalize(raw, (4, 4))
    assert maps.shape == (1, 4, 4) and maps.min() == 0 and maps.max() == 1
    expected = torch.nn.functional.interpolate(
        raw.clamp_min(0)[None], size=(4, 4), mode="bilinear", align_corners=False
    )[0]
    torch.testing.assert_close(maps, camlens.minmax(expected))
    signed = finalize(raw, (2, 2), relu=False)
    torch.testing.assert_close(signed, torch.tensor([[[0.0, 0.5], [0.75, 1.0]]]))
    raw_values = finalize(raw, (2, 2), normalize=False)
    torch.testing.assert_close(raw_values, raw.clamp_min(0))


def test_bicubic_option(small_cnn, images):
    exp = camlens.explain(small_cnn, images, upsample="bicubic", normalize=False)
    expected = torch.nn.functional.interpolate(
        exp.raw.clamp_min(0)[:, None], size=(32, 32), mode="bicubic", align_corners=False
    )[:, 0]
    torch.testing.assert_close(exp.maps, expected)


def test_bad_shapes_and_modes():
    expected = r"expected maps of shape \(B, H, W\) or \(B, T, H, W\), got \(3, 224\)"
    with pytest.raises(camlens.CamlensValueError, match=expected):
        camlens.minmax(torch.zeros(3, 224))
    with pytest.raises(camlens.CamlensValueError, match="upsample must be one of bilinear"):
        upsample(torch.zeros(1, 2, 2), (4, 4), "area")


def test_clips_are_upsampled_trilinearly_and_scaled_per_clip():
    raw = torch.arange(2 * 2 * 2 * 2, dtype=torch.float32).reshape(2, 2, 2, 2)
    raw[1] *= -1  # all negative: rectified to a constant clip, zeros
    maps = camlens.maps.finalize(raw, (4, 6, 6))
    expected = torch.nn.functional.interpolate(
        raw[:1, None], size=(4, 6, 6), mode="trilinear", align_corners=False
    )[:, 0]
    torch.testing.assert_close(maps[0], (expected[0] - 0) / 7)
    assert maps[0].amin() == 0 and maps[0].amax() == 1 and maps[1].abs().max() == 0
