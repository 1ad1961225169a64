"""Target resolution: None, int, per-image sequence, callable, one-logit heads, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import camlens
from camlens import targets

LOGITS = torch.tensor([[0.0, 2.0, 1.0], [3.0, -1.0, 0.5]])


def test_forms():
    assert targets.resolve(None, LOGITS).indices.tolist() == [1, 0]
    assert targets.resolve(2, LOGITS).indices.tolist() == [2, 2]
    assert targets.resolve([0, 2], LOGITS).indices.tolist() == [0, 2]
    assert targets.resolve(torch.tensor([2, 1]), LOGITS).indices.tolist() == [2, 1]
    resolved = targets.resolve([0, 2], LOGITS)
    torch.testing.assert_close(targets.scores(LOGITS, resolved), torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(
        targets.probabilities(LOGITS, resolved), LOGITS.softmax(1)[[0, 1], [0, 2]]
    )


def test_one_logit_head():
    logits = torch.tensor([[1.5], [-0.5]])
    resolved = targets.resolve(None, logits)
    assert resolved.indices.tolist() == [1, 0]
    torch.testing.assert_close(targets.scores(logits, resolved), torch.tensor([1.5, 0.5]))
    torch.testing.assert_close(
        targets.probabilities(logits, resolved), torch.sigmoid(torch.tensor([1.5, 0.5]))
    )


def test_callable_target(small_cnn, images):
    exp = camlens.explain(small_cnn, images, target=lambda logits: logits[:, 1] - logits[:, 0])
    assert exp.targets.tolist() == [-1, -1]
    assert exp.probs.isnan().all()
    logits = small_cnn(images).detach()
    torch.testing.assert_close(exp.scores, logits[:, 1] - logits[:, 0])
    with pytest.raises(camlens.CamlensValueError, match=r"must return a tensor of shape \(B,\)"):
        camlens.explain(small_cnn, images, target=lambda logits: logits)


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (3, camlens.CamlensValueError, r"target 3 is out of range .* 3 classes \(expected 0..2\)"),
        ([0], camlens.CamlensValueError, "target has 1 entries but the batch has 2 images"),
        ("cat", camlens.CamlensTypeError, "target must be None, an int"),
        (1.5, camlens.CamlensTypeError, "target must be None, an int"),
        ([-1, 0], camlens.CamlensValueError, "target -1 is out of range"),
    ],
)
def test_bad_targets(target, error, message):
    with pytest.raises(error, match=message):
        targets.resolve(target, LOGITS)


def test_errors_are_value_and_type_errors():
    assert issubclass(camlens.CamlensValueError, ValueError)
    assert issubclass(camlens.CamlensTypeError, TypeError)
    assert issubclass(camlens.CamlensValueError, camlens.CamlensError)


# --------------------------------------------------------------------- segmentation and detection
DENSE = torch.tensor(
    [
        [[[1.0, 0.0], [0.0, 2.0]], [[0.5, 3.0], [-1.0, 0.0]], [[0.0, 1.0], [4.0, 1.0]]],
    ]
)  # (1, 3, 2, 2): argmax per pixel [[0, 1], [2, 0]]


class _HFOutput:
    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits


def test_segmentation_sums_the_class_over_its_predicted_pixels():
    # class 0 is predicted at (0, 0) and (1, 1): 1 + 2; class 2 at (1, 0): 4
    for output in (DENSE, {"out": DENSE, "aux": DENSE * 0}, _HFOutput(DENSE)):
        assert camlens.targets.segmentation(0)(output).tolist() == [3.0]
        assert camlens.targets.segmentation(2)(output).tolist() == [4.0]
    mask = torch.tensor([[1, 1], [0, 0]])
    assert camlens.targets.segmentation(1, mask)(DENSE).tolist() == [3.5]


def test_segmentation_resizes_a_mask_at_the_input_size():
    # a (4, 4) mask for a (2, 2) output (a SegFormer's 1/4-size logits): nearest resize
    mask = torch.zeros(4, 4)
    mask[:2, 2:] = 1  # the top-right output pixel
    assert camlens.targets.segmentation(1, mask)(DENSE).tolist() == [3.0]


def test_segmentation_of_a_one_channel_model():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])  # (1, 1, 2, 2)
    assert camlens.targets.segmentation(1)(logits).tolist() == [2.5]  # logit > 0: 2 + 0.5
    assert camlens.targets.segmentation(0)(logits).tolist() == [4.0]  # negative: 1 + 3


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: camlens.targets.segmentation(3)(DENSE),
            "category 3 is out of range for a segmentation model with 3 classes (expected 0..2)",
        ),
        (
            lambda: camlens.targets.segmentation(0)(torch.zeros(2, 3)),
            "targets.segmentation expects the model to return logits of shape (B, K, H, W) as a "
            "tensor, a dict with 'out' or 'logits', or an object with .logits, got Tensor of "
            "shape (2, 3) and dtype torch.float32",
        ),
        (
            lambda: camlens.targets.segmentation(0, torch.ones(2, 2, 2))(DENSE),
            "mask has 2 maps but the batch has 1 images; pass one (H, W) mask or one per image",
        ),
        (lambda: camlens.targets.segmentation("cat"), "category must be an int, got 'cat'"),
    ],
)
def test_segmentation_errors(build, message):
    with pytest.raises(camlens.CamlensError) as error:
        build()
    assert str(error.value) == message


DETECTIONS = [
    {
        "boxes": torch.tensor(
            [
                [0.0, 0.0, 10.0, 10.0],
                [1.0, 1.0, 10.0, 10.0],
                [0.0, 0.0, 10.0, 10.0],
                [20, 20, 30, 30],
            ]
        ),
        "labels": torch.tensor([1, 2, 2, 1]),
        "scores": torch.tensor([0.9, 0.6, 0.3, 0.8]),
    }
]


def test_detection_takes_the_same_label_with_the_highest_iou():
    # the reference box (0, 0, 10, 10) with label 2: detection 2 (IoU 1) beats detection 1 (0.81);
    # detection 0 has IoU 1 too but label 1
    target = camlens.targets.detection([[0, 0, 10, 10]], [2])
    assert target.matches(DETECTIONS) == [[2]]
    torch.testing.assert_close(target(DETECTIONS), torch.tensor([0.3]))
    both = camlens.targets.detection([[0, 0, 10, 10], [21, 21, 30, 30]], [1, 1])
    assert both.matches(DETECTIONS) == [[0, 3]]
    torch.testing.assert_close(both(DETECTIONS), torch.tensor([1.7]))
    # IoU of (21, 21, 30, 30) with (20, 20, 30, 30) is 0.81: below iou=0.9, no match adds 0
    strict = camlens.targets.detection([[0, 0, 10, 10], [21, 21, 30, 30]], [1, 1], iou=0.9)
    torch.testing.assert_close(strict(DETECTIONS), torch.tensor([0.9]))


def test_detection_matches_by_torchvisions_box_iou():
    # detection's overlaps are torchvision.ops.box_iou's (x0, y0, x1, y1), without torchvision
    # in the core; two zero-area boxes overlap 0 (torchvision: nan)
    from torchvision.ops import box_iou

    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(2, 7, 2, 2, generator=generator) * 50
    a, b = (torch.cat([c.min(dim=1).values, c.max(dim=1).values], dim=1) for c in corners)
    torch.testing.assert_close(targets.pairwise_iou(a, b), box_iou(a, b))
    point = torch.tensor([[5.0, 5.0, 5.0, 5.0]])
    assert targets.pairwise_iou(point, point).tolist() == [[0.0]]


def test_there_is_one_box_iou():
    source = Path(camlens.__file__).parent
    defined = [p for p in source.rglob("*.py") if "def box_iou(" in p.read_text(encoding="utf-8")]
    assert [p.relative_to(source).as_posix() for p in defined] == ["metrics/localisation.py"]


def test_detection_reads_raw_ultralytics_anchors():
    # (B=1, 4 + 2 classes, 3 anchors), boxes as centre x, centre y, width, height
    raw = torch.tensor(
        [
            [
                [5.0, 25.0, 5.0],
                [5.0, 25.0, 5.0],
                [10.0, 10.0, 8.0],
                [10.0, 10.0, 8.0],
                [0.7, 0.2, 0.1],
                [0.1, 0.6, 0.4],
            ]
        ]
    )
    boxes, labels, scores = targets.detections_of((raw, []))[0]
    torch.testing.assert_close(boxes[0], torch.tensor([0.0, 0.0, 10.0, 10.0]))
    assert labels.tolist() == [0, 1, 1]
    target = camlens.targets.detection([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])
    # box 0 with label 1: anchor 2 (IoU 0.64, label 1); anchor 0 has label 0
    assert target.matches(raw) == [[2, 1]]
    torch.testing.assert_close(target(raw), torch.tensor([1.0]))


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: camlens.targets.detection([[0, 0, 1, 1]], [1, 2]),
            "detection got 1 boxes but 2 labels; pass one label per box",
        ),
        (
            lambda: camlens.targets.detection([[0, 0, 1, 1]], [1], iou=2),
            "iou must be a number in [0, 1], got 2",
        ),
        (
            lambda: camlens.targets.detection([[0, 0, 1, 1]], [1])(torch.zeros(2, 5)),
            "targets.detection expects a detector's output: a list of dicts with 'boxes', "
            "'labels' and 'scores' (torchvision) or a (B, 4 + classes, anchors) tensor "
            "(ultralytics), got Tensor of shape (2, 5) and dtype torch.float32",
        ),
    ],
)
def test_detection_errors(build, message):
    with pytest.raises(camlens.CamlensError) as error:
        build()
    assert str(error.value) == message


def _found(*images):
    """A detector's output: per image, (boxes, labels, scores) as dicts."""
    return [
        {"boxes": torch.tensor(b, dtype=torch.float32), "labels": torch.tensor(labels),
         "scores": torch.tensor(s)}
        for b, labels, s in images
    ]  # fmt: skip


def test_perturbed_rows_read_their_own_images_reference_boxes():
    """Row n of a perturbed batch (Score-CAM's masked copies, noisy copies) is a copy of image
    owners[n]: it is matched against that image's boxes, and an unmatched row scores 0."""
    target = targets.detection(
        [torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[20.0, 20, 30, 30]])],
        [torch.tensor([1]), torch.tensor([2])],
    )
    rows = targets.ResolvedTarget(torch.full((2,), -1), target).rows(torch.tensor([1, 1, 0]))
    output = _found(
        ([[20, 20, 30, 30]], [2], [0.9]),  # image 1's object
        ([[0, 0, 10, 10]], [1], [0.8]),  # image 0's object, wrong for a copy of image 1
        ([[0, 0, 10, 10]], [1], [0.7]),
    )
    torch.testing.assert_close(targets.scores(output, rows), torch.tensor([0.9, 0.0, 0.7]))
    nothing = _found(([], [], []), ([[50, 50, 60, 60]], [2], [0.5]), ([], [], []))
    torch.testing.assert_close(targets.scores(nothing, rows), torch.zeros(3))
    with pytest.raises(camlens.CamlensValueError, match="no detection matches"):
        target(_found(([], [], []), ([], [], [])))  # the intact images: still an error


def test_perturbed_rows_read_their_own_images_masks():
    masks = torch.zeros(2, 4, 4)
    masks[0, 0, 0] = masks[1, 3, 3] = 1
    target = targets.segmentation(1, masks)
    rows = targets.ResolvedTarget(torch.full((2,), -1), target).rows(torch.tensor([1, 0, 1]))
    logits = torch.arange(3 * 2 * 16, dtype=torch.float32).reshape(3, 2, 4, 4)
    expected = torch.stack([logits[0, 1, 3, 3], logits[1, 1, 0, 0], logits[2, 1, 3, 3]])
    torch.testing.assert_close(targets.scores(logits, rows), expected)


def test_class_targets_of_perturbed_rows():
    rows = targets.ResolvedTarget(torch.tensor([4, 7])).rows(torch.tensor([1, 0, 0]))
    assert rows.indices.tolist() == [7, 4, 4] and rows.function is None
