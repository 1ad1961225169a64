"""Localisation: pointing games against Quantus, CAM boxes and IoU by hand."""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch

from camlens import metrics
from camlens.errors import CamlensValueError
from camlens.metrics.localisation import box_masks


def quantus_scores(metric, maps: torch.Tensor, boxes) -> np.ndarray:
    """Run a Quantus localisation metric on (B, H, W) maps with masks made from ``boxes``."""
    batch, height, width = maps.shape
    masks = box_masks(boxes, (batch, height, width)).numpy()[:, None].astype(np.float32)
    a_batch = maps.numpy()[:, None]
    x_batch = np.zeros((batch, 1, height, width), dtype=np.float32)
    return np.asarray(
        metric(
            model=None,
            x_batch=x_batch,
            y_batch=np.zeros(batch, dtype=int),
            a_batch=a_batch,
            s_batch=masks,
        ),
        dtype=np.float64,
    )


@pytest.fixture(scope="module")
def maps_and_boxes() -> tuple[torch.Tensor, list]:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 40, 48, generator=generator) ** 4
    maps[2] = 0.0
    maps[2, 10, 10] = maps[2, 30, 40] = 1.0  # two maxima, one inside
    boxes = [
        (5, 5, 20, 30),
        (0, 0, 47, 39),
        (35, 25, 45, 35),
        [(0, 0, 3, 3), (10, 10, 30, 30)],
        (40, 2, 47, 9),
        (20, 20, 20, 20),
    ]
    return maps, boxes


def test_pointing_game_agrees_with_quantus(maps_and_boxes):
    maps, boxes = maps_and_boxes
    reference = quantus.PointingGame(disable_warnings=True, normalise=False)
    expected = quantus_scores(reference, maps, boxes)
    got = metrics.pointing_game(maps, boxes)
    np.testing.assert_array_equal(got.numpy(), expected)
    assert 0 < got.sum() < len(got)


def test_energy_pointing_game_agrees_with_quantus_relevance_mass(maps_and_boxes):
    maps, boxes = maps_and_boxes
    keep = [0, 1, 3, 4, 5]
    maps = maps[keep]
    boxes = [boxes[i] for i in keep]
    reference = quantus.RelevanceMassAccuracy(disable_warnings=True, normalise=False)
    expected = quantus_scores(reference, maps, boxes)
    np.testing.assert_allclose(
        metrics.energy_pointing_game(maps, boxes).numpy(), expected, atol=1e-6
    )
    assert float(metrics.energy_pointing_game(maps, boxes)[1]) == pytest.approx(1.0)


def test_pointing_game_tolerance_in_pixels():
    maps = torch.zeros(1, 50, 50)
    maps[0, 25, 40] = 1.0  # 10 pixels right of the box's edge at x = 30, and 5 below y = 20
    box = [(10, 10, 30, 20)]
    assert float(metrics.pointing_game(maps, box)[0]) == 0.0
    assert float(metrics.pointing_game(maps, box, tolerance=11)[0]) == 0.0  # sqrt(125) > 11
    assert float(metrics.pointing_game(maps, box, tolerance=15)[0]) == 1.0
    with pytest.raises(CamlensValueError, match="tolerance must be >= 0 pixels, got -1"):
        metrics.pointing_game(maps, box, tolerance=-1)


def test_box_iou_uses_the_largest_component_above_20_percent_of_the_max():
    heat = torch.zeros(1, 30, 30)
    heat[0, 2:12, 2:8] = 0.5  # the largest component: x 2..7, y 2..11 (60 pixels)
    heat[0, 20:24, 20:24] = 1.0  # the maximum, in a smaller component (16 pixels)
    heat[0, 15, 15] = 0.19  # below 20% of the max: not part of any component
    truth = [(2, 2, 7, 13)]  # 6 x 12 = 72 pixels, containing the 60
    iou = metrics.box_iou(heat, truth)
    assert float(iou[0]) == pytest.approx(60 / 72)
    assert float(metrics.box_iou(heat, [(20, 20, 23, 23)])[0]) == pytest.approx(0.0)
    # a lower threshold keeps the diagonal neighbours together: 8-connectivity
    heat[0, 12, 8] = heat[0, 13, 9] = heat[0, 14, 10] = 0.5
    heat[0, 15:20, 11:20] = 0.5
    joined = metrics.box_iou(heat, [(2, 2, 23, 23)])
    assert float(joined[0]) == pytest.approx(1.0)
    assert float(metrics.box_iou(torch.zeros(1, 30, 30), truth)[0]) == 0.0


def test_localisation_error_needs_the_right_class_and_half_overlap():
    heat = torch.zeros(3, 20, 20)
    heat[:, 5:15, 5:15] = 1.0
    boxes = [(5, 5, 14, 14), (5, 5, 14, 14), (0, 0, 4, 4)]
    error = metrics.localisation_error(heat, boxes, predictions=[1, 2, 3], labels=[1, 0, 3])
    torch.testing.assert_close(error, torch.tensor([0.0, 1.0, 1.0]))


def test_boxes_must_fit_the_batch():
    with pytest.raises(CamlensValueError, match="boxes has 1 entries but there are 2 maps"):
        metrics.pointing_game(torch.rand(2, 8, 8), [(0, 0, 3, 3)])
    with pytest.raises(
        CamlensValueError, match=r"a box needs x0 <= x1 and y0 <= y1, got \(5, 0, 3, 3\)"
    ):
        metrics.box_iou(torch.rand(1, 8, 8), [(5, 0, 3, 3)])
    with pytest.raises(
        CamlensValueError, match=r"expected maps of shape \(B, H, W\), got \(8, 8\)"
    ):
        metrics.energy_pointing_game(torch.rand(8, 8), [(0, 0, 3, 3)])


def test_box_iou_counts_pixels_with_inclusive_corners_against_the_best_true_box():
    heat = torch.zeros(1, 20, 20)
    heat[0, 0:10, 0:10] = 1.0  # the CAM box (0, 0, 9, 9): 100 pixels
    # (5, 5, 14, 14) shares 5 x 5 = 25 of its 100 pixels: 25 / 175; the far box shares none
    iou = metrics.box_iou(heat, [[(15, 15, 19, 19), (5, 5, 14, 14)]])
    assert float(iou[0]) == pytest.approx(25 / 175)
