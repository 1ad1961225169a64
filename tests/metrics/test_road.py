"""ROAD: the imputation by hand on 4x4 images, MoRF/LeRF against pytorch-grad-cam."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

from camlens import metrics
from camlens.errors import CamlensValueError
from camlens.metrics.remove_and_debias import removed_count

D, S = 1 / 12, 1 / 6  # diagonal and direct neighbours' weights


def image_4x4() -> torch.Tensor:
    values = [
        [3.0, 1.0, 4.0, 1.0],
        [5.0, 9.0, 2.0, 6.0],
        [5.0, 3.0, 5.0, 8.0],
        [9.0, 7.0, 9.0, 3.0],
    ]
    return torch.tensor(values)[None]


def holes(*pixels: tuple[int, int]) -> torch.Tensor:
    mask = torch.zeros(4, 4, dtype=torch.bool)
    for row, col in pixels:
        mask[row, col] = True
    return mask


def test_one_interior_pixel_becomes_the_weighted_mean_of_its_neighbours():
    image = image_4x4()
    filled = metrics.noisy_linear_impute(image, holes((1, 1)), noise=0)
    # neighbours of (1, 1): diagonals 3, 4, 5, 5; direct 1, 5, 2, 3; weights sum to 1
    expected = D * (3 + 4 + 5 + 5) + S * (1 + 5 + 2 + 3)
    assert float(filled[0, 1, 1]) == pytest.approx(expected, abs=1e-6)
    kept = ~holes((1, 1))
    torch.testing.assert_close(filled[0][kept], image[0][kept])


def test_a_corner_pixel_renormalises_over_the_neighbours_inside():
    filled = metrics.noisy_linear_impute(image_4x4(), holes((0, 0)), noise=0)
    expected = (S * 1 + S * 5 + D * 9) / (S + S + D)
    assert float(filled[0, 0, 0]) == pytest.approx(expected, abs=1e-6)


def test_two_adjacent_holes_are_solved_together():
    # unknowns a = (1, 1), b = (1, 2), each the other's direct neighbour:
    # a = s_a + S b and b = s_b + S a, with s the known neighbours' weighted sums
    filled = metrics.noisy_linear_impute(image_4x4(), holes((1, 1), (1, 2)), noise=0)
    s_a = D * (3 + 4 + 5 + 5) + S * (1 + 5 + 3)
    s_b = D * (1 + 1 + 3 + 8) + S * (4 + 6 + 5)
    a = (s_a + S * s_b) / (1 - S * S)
    b = s_b + S * a
    assert float(filled[0, 1, 1]) == pytest.approx(a, abs=1e-6)
    assert float(filled[0, 1, 2]) == pytest.approx(b, abs=1e-6)


def test_a_linear_ramp_is_filled_exactly_and_noise_comes_from_the_generator():
    ramp = torch.arange(16.0).reshape(1, 4, 4).repeat(2, 1, 1)
    hole = holes((1, 1), (1, 2), (2, 1), (2, 2))
    torch.testing.assert_close(metrics.noisy_linear_impute(ramp, hole, noise=0), ramp)
    noisy = metrics.noisy_linear_impute(ramp, hole, 0.5, torch.Generator().manual_seed(3))
    draw = torch.randn((2, 4), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(noisy[:, hole] - ramp[:, hole], 0.5 * draw)


def test_removed_count_follows_numpy_percentile():
    values = np.random.default_rng(0).random(4096)
    for percentile in (10, 20, 50, 80, 90, 12.5):
        kept = int((values < np.percentile(values, 100 - percentile)).sum())
        assert removed_count(values.size, percentile) == values.size - kept


@pytest.mark.parametrize(
    ("order", "reference"), [("morf", ROADMostRelevantFirst), ("lerf", ROADLeastRelevantFirst)]
)
def test_road_agrees_with_pytorch_grad_cam(order, reference):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 32, 32, generator=generator)
    maps = torch.rand(2, 32, 32, generator=generator)
    classes = model(x).argmax(dim=1)
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    for removed in (20, 70):
        torch.manual_seed(11)
        want = reference(percentile=100 - removed)(
            x, maps.numpy(), targets, model, return_diff=False
        )
        got = metrics.road(
            model,
            x,
            maps,
            order=order,
            percentiles=[removed],
            generator=torch.Generator().manual_seed(11),
        )
        np.testing.assert_allclose(got.numpy(), want, atol=1e-3)
        assert np.abs(got.numpy() - want).max() < 1e-5  # the same noise: equal, not just close


def test_road_returns_the_mean_over_percentiles_and_the_curves():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x, maps = torch.randn(1, 3, 32, 32), torch.rand(1, 32, 32)
    means, curves = metrics.road(
        model, x, maps, percentiles=(10, 50, 90), noise=0, return_curves=True
    )
    assert curves.shape == (1, 3)
    torch.testing.assert_close(means, curves.mean(dim=1))
    with pytest.raises(CamlensValueError, match="order must be 'morf' or 'lerf', got 'up'"):
        metrics.road(model, x, maps, order="up")
    with pytest.raises(CamlensValueError, match=r"percentiles must be .* in \[0, 100\]"):
        metrics.road(model, x, maps, percentiles=[120])
