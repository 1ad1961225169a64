"""Target resolution: None, int, per-image sequence, callable, one-logit heads, errors."""

from __future__ import annotations

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
