"""CAM: the identities of Zhou et al. 2016 and its head detection."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from toy_models import TINY_X, SmallCNN

import camlens


def test_hand_computed_cam(tiny_gap):
    exp = camlens.explain(tiny_gap, TINY_X, method="cam", target=1, normalize=False)
    # 2 * A0 + 0.5 * A1
    torch.testing.assert_close(exp.raw[0], torch.tensor([[2.0, 4.5], [6.5, 8.0]]))
    # mean over locations = logit - bias = 5.05 + 0.2
    assert exp.raw[0].mean().item() == pytest.approx(5.25)
    assert exp.targets.tolist() == [1] and exp.scores.item() == pytest.approx(5.05)


def test_mean_of_raw_is_logit_minus_bias_and_matches_gradcam(small_cnn, images):
    small_cnn.inplace = False
    model = nn.Sequential(small_cnn.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), small_cnn.fc)
    exp = camlens.explain(model, images, method="cam", target=[0, 3])
    logits = model(images).detach()
    expected = logits[[0, 1], [0, 3]] - small_cnn.fc.bias.detach()[[0, 3]]
    torch.testing.assert_close(exp.raw.mean(dim=(1, 2)), expected, rtol=1e-5, atol=1e-6)
    grad = camlens.explain(model, images, method="gradcam", target=[0, 3])
    torch.testing.assert_close(exp.maps, grad.maps, rtol=0, atol=1e-5)
    assert exp.layer == "0"


def test_relu_between_layer_and_pooling_is_followed(small_cnn, images):
    # SmallCNN applies F.relu (in place) after `features`, as DenseNet does.
    exp = camlens.explain(small_cnn, images, method="cam", target=2, normalize=False)
    features = small_cnn.features(images).detach().relu()
    expected = torch.einsum("bchw,c->bhw", features, small_cnn.fc.weight[2].detach())
    torch.testing.assert_close(exp.raw, expected, rtol=1e-5, atol=1e-6)


def test_one_logit_head_uses_negated_weights_for_class_zero():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)
    ).eval()
    x = torch.randn(2, 3, 16, 16)
    one = camlens.explain(model, x, method="cam", target=1, normalize=False)
    zero = camlens.explain(model, x, method="cam", target=0, normalize=False)
    torch.testing.assert_close(zero.raw, -one.raw)
    logit = model(x).detach()[:, 0]
    torch.testing.assert_close(one.probs, torch.sigmoid(logit))
    torch.testing.assert_close(zero.probs, 1 - torch.sigmoid(logit))


def test_dense_head_is_refused_with_a_pointer_to_gradcam(tiny_dense):
    with pytest.raises(camlens.CamlensError, match="global average of the explained layer") as e:
        camlens.explain(tiny_dense, TINY_X, method="cam")
    assert "method='gradcam'" in str(e.value)


def test_head_that_is_not_linear_is_refused(images):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with pytest.raises(camlens.CamlensValueError, match="not produced by an nn.Linear"):
        camlens.explain(model, images, method="cam", layer="0")


def test_inplace_and_out_of_place_models_agree(images):
    a = camlens.explain(SmallCNN(inplace=True).eval(), images, method="cam")
    b = camlens.explain(SmallCNN(inplace=False).eval(), images, method="cam")
    torch.testing.assert_close(a.raw, b.raw)
