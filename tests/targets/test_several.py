"""Several targets per image ("topK", "above:P", per-image lists) and output values: one map per
(image, class) pair in one batched call, equal to single-target calls; exp.index; errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camlens
from camlens.errors import CamlensValueError


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_top_k_equals_single_target_calls(small_cnn, batch, method):
    exp = camlens.explain(small_cnn, batch, method, target="top3")
    logits = small_cnn(batch).detach()
    assert exp.index.tolist() == [0, 0, 0, 1, 1, 1]
    assert exp.targets.tolist() == logits.topk(3, dim=1).indices.reshape(-1).tolist()
    for rank in range(3):  # k single-target calls: each image's rank-th class
        single = camlens.explain(small_cnn, batch, method, target=exp.targets[rank::3])
        torch.testing.assert_close(exp.maps[rank::3], single.maps, atol=1e-6, rtol=0)
        torch.testing.assert_close(exp.probs[rank::3], single.probs)


def test_lists_per_image_and_index(small_cnn, batch):
    exp = camlens.explain(small_cnn, batch, target=[[1, 4], [2]])
    assert exp.index.tolist() == [0, 0, 1] and exp.targets.tolist() == [1, 4, 2]
    assert exp.maps.shape == (3, 64, 64)
    single = camlens.explain(small_cnn, batch, target=[3, 0])
    assert single.index.tolist() == [0, 1] and single.index.dtype == torch.int64


def test_above_with_sigmoid_against_hand_computation(small_cnn, batch):
    exp = camlens.explain(small_cnn, batch, target="above:0.45", activation="sigmoid")
    probs = torch.sigmoid(small_cnn(batch).detach())
    pairs = [(i, c) for i in range(2) for c in probs[i].argsort(descending=True).tolist()]
    expected = [(i, c) for i, c in pairs if probs[i, c] >= 0.45]
    assert list(zip(exp.index.tolist(), exp.targets.tolist())) == expected
    torch.testing.assert_close(exp.probs, torch.stack([probs[i, c] for i, c in expected]))


def test_no_class_above_gives_no_map(small_cnn, batch):
    exp = camlens.explain(small_cnn, batch, target="above:0.9")
    assert exp.maps.shape == (0, 64, 64) and exp.index.tolist() == []


def test_activation_of_one_target(small_cnn, batch):
    logits = small_cnn(batch).detach()
    exp = camlens.explain(small_cnn, batch, target=1, activation="sigmoid")
    torch.testing.assert_close(exp.probs, torch.sigmoid(logits[:, 1]))
    assert camlens.explain(small_cnn, batch, target=1, activation="none").probs.isnan().all()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "top0",
            "target 'top0' asks for the 0 best classes; pass topK with K >= 1, such as 'top3'",
        ),
        (
            "above:1.5",
            "target 'above:1.5' has threshold 1.5; pass above:P with P in [0, 1], such as "
            "'above:0.5'",
        ),
        (
            "abovex",
            "unknown target 'abovex'; pass 'topK', 'above:P' or 'output:K' (such as 'top3', "
            "'above:0.5', 'output:0')",
        ),
        ("top9", "target 'top9' asks for 9 classes but the model has 5; pass topK with K <= 5"),
        (
            [[1]],
            "target has 1 lists of classes but the batch has 2 images; pass one list per image",
        ),
        ("output:7", "output:7 is out of range for a model with 5 outputs (expected 0..4)"),
    ],
)
def test_errors(small_cnn, batch, target, message):
    with pytest.raises(CamlensValueError) as error:
        camlens.explain(small_cnn, batch, target=target)
    assert str(error.value) == message


def test_activation_choice(small_cnn, batch):
    with pytest.raises(CamlensValueError, match="activation must be one of softmax, sigmoid, none"):
        camlens.explain(small_cnn, batch, target=1, activation="relu")
    with pytest.raises(CamlensValueError, match="compares probabilities"):
        camlens.explain(small_cnn, batch, target="above:0.5", activation="none")


def regression(outputs: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, outputs),
    ).eval()  # fmt: skip


@pytest.mark.parametrize("target", [("output", 2), "output:2"])
def test_output_value_equals_callable(batch, target):
    model = regression(3)
    exp = camlens.explain(model, batch, target=target)
    ref = camlens.explain(model, batch, target=lambda out: out[:, 2])
    torch.testing.assert_close(exp.maps, ref.maps, atol=1e-6, rtol=0)
    torch.testing.assert_close(exp.scores, model(batch)[:, 2].detach())
    assert exp.targets.tolist() == [2, 2] and exp.probs.isnan().all()


def test_one_output_is_not_a_binary_head(batch):
    model = regression(1)
    exp = camlens.explain(model, batch, target="output:0")
    torch.testing.assert_close(exp.scores, model(batch)[:, 0].detach())
    smooth = camlens.explain(model, batch, target="output:0", smooth=2)
    assert smooth.targets.tolist() == [0, 0] and smooth.probs.isnan().all()
