"""RISE against its formula in float64 with the same masks."""

from __future__ import annotations

import pytest
import torch

import camlens
from camlens.methods.masking import rise_masks


def test_matches_the_formula_in_float64(small_cnn, images):
    exp = camlens.explain(
        small_cnn, images, method="rise", target=[1, 3], num_masks=20, cells=4, p=0.3, seed=5,
        precision="fp32", batch_size=7,
    )  # fmt: skip
    masks = rise_masks(20, (32, 32), 4, 0.3, torch.Generator().manual_seed(5)).double()
    model = small_cnn.double()
    try:
        with torch.no_grad():
            scores = torch.stack(
                [model(images.double() * m)[[0, 1], [1, 3]] for m in masks], dim=1
            )  # (2, 20)
    finally:
        small_cnn.float()
    centred = scores - scores.mean(1, keepdim=True)
    expected = torch.einsum("bn,nhw->bhw", centred, masks) / (20 * 0.3)
    assert exp.layer == "" and exp.raw.shape == (2, 32, 32)
    assert torch.allclose(exp.raw.double(), expected, atol=1e-4)


def test_a_constant_added_to_the_score_leaves_the_map_unchanged(small_cnn, images):
    def shifted(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 1] + 100.0

    def plain(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 1]

    options = {"num_masks": 12, "cells": 4, "seed": 2, "precision": "fp32"}
    a = camlens.explain(small_cnn, images, method="rise", target=shifted, **options)
    b = camlens.explain(small_cnn, images, method="rise", target=plain, **options)
    torch.testing.assert_close(a.raw, b.raw, atol=2e-4, rtol=0)


def test_masks_are_seeded_shifted_and_in_range():
    a = rise_masks(6, (30, 30), 5, 0.5, torch.Generator().manual_seed(0))
    b = rise_masks(6, (30, 30), 5, 0.5, torch.Generator().manual_seed(0))
    assert a.shape == (6, 30, 30) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and 0 < float(a.mean()) < 1


@pytest.mark.parametrize(("key", "bad"), [("num_masks", 0), ("cells", 1.5), ("p", 0.0)])
def test_options_are_checked(small_cnn, key, bad):
    with pytest.raises(camlens.CamlensValueError, match=key):
        camlens.RISE(small_cnn, **{key: bad})
