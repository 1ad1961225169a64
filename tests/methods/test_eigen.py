"""Eigen-CAM against a float64 reference with the sign rule."""

from __future__ import annotations

import numpy as np
import torch
from toy_models import TINY_X

import camlens
from camlens.methods.eigen import eigencam


def reference(a: np.ndarray) -> np.ndarray:
    """SVD of the centred activations, first component, sign: positive correlation with the
    centred channel-mean map (float64, per image)."""
    out = []
    for acts in a.astype(np.float64):
        c, h, w = acts.shape
        x = acts.reshape(c, h * w).T
        x = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        projection = x @ vt[0]
        mean_map = acts.mean(axis=0).reshape(-1)
        if projection @ (mean_map - mean_map.mean()) < 0:
            projection = -projection
        out.append(projection.reshape(h, w))
    return np.stack(out)


def test_hand_computed(tiny_gap):
    # Centred X has orthogonal columns with variances 5 > 1: v1 = e0, projection = A0 - 2.5.
    exp = camlens.explain(tiny_gap, TINY_X, method="eigencam", normalize=False)
    torch.testing.assert_close(exp.raw[0], torch.tensor([[-1.5, -0.5], [0.5, 1.5]]))


def test_matches_float64_reference_and_is_class_agnostic(small_cnn, images):
    a = torch.randn(3, 16, 6, 5, generator=torch.Generator().manual_seed(0)).relu()
    np.testing.assert_allclose(eigencam(a).numpy(), reference(a.numpy()), rtol=1e-4, atol=1e-5)
    first = camlens.explain(small_cnn, images, method="eigencam", target=0)
    second = camlens.explain(small_cnn, images, method="eigencam", target=4)
    torch.testing.assert_close(first.maps, second.maps)


def test_sign_does_not_depend_on_the_svd(small_cnn, images):
    # Negating the activations' centred part flips the SVD; the sign rule flips it back.
    a = torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(eigencam(a).numpy(), reference(a.numpy()), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(eigencam(-a).numpy(), reference(-a.numpy()), rtol=1e-4, atol=1e-5)
