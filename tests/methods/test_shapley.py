"""ShapleyCAM against pytorch-grad-cam 1.5.7's ``ShapleyCAM`` (with ``ClassifierOutputReST``) on a
random-weight resnet18, and its Hessian-vector product by hand."""

from __future__ import annotations

import pytest
import torch
import torchvision

import camlens
from camlens.methods.shapley import rest

TARGETS = [3, 500]


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    return model, torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_agrees_with_pytorch_grad_cam_rest(resnet, layer):
    from pytorch_grad_cam import ShapleyCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST

    model, x = resnet
    exp = camlens.explain(model, x, method="shapleycam", target=TARGETS, layer=layer)
    with ShapleyCAM(model, [model.get_submodule(layer)]) as reference:
        theirs = torch.from_numpy(reference(x, targets=[ClassifierOutputReST(t) for t in TARGETS]))
    assert (exp.maps - theirs).abs().max() < 1e-4
    # the scores and probabilities are the target's logits', whatever score is differentiated
    logits = model(x).detach()
    torch.testing.assert_close(exp.scores, logits[[0, 1], TARGETS])
    torch.testing.assert_close(exp.probs, logits.softmax(1)[[0, 1], TARGETS])


def test_logit_score_is_gradcam_above_piecewise_linear_layers(resnet):
    # as pytorch-grad-cam's ShapleyCAM with ClassifierOutputTarget: H A = 0 above layer4
    model, x = resnet
    ours = camlens.explain(model, x, method="shapleycam", target=TARGETS, score="logit")
    torch.testing.assert_close(ours.raw, camlens.explain(model, x, target=TARGETS).raw)


def test_hessian_vector_product_by_hand():
    # s = sum(w * A^2) (one logit, class 1: its sign +1) at the layer A: g = H A = 2 w A
    class Square(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 1)
            self.head = torch.nn.Linear(2 * 3 * 3, 1)

        def forward(self, x):
            a = self.conv(x)
            return self.head(a.pow(2).flatten(1))

    torch.manual_seed(0)
    model = Square().eval()
    x = torch.randn(1, 1, 3, 3)
    capture = camlens.backends.adapter_for(model).capture(x, ["conv"], 1, hvp=True)
    a = model.conv(x).detach()
    w = model.head.weight.detach().reshape(1, 2, 3, 3)
    torch.testing.assert_close(capture.gradients[0], 2 * w * a)
    torch.testing.assert_close(capture.hvps[0], 2 * w * a)
    exp = camlens.explain(model, x, method="shapleycam", layer="conv", target=1, normalize=False)
    # one logit: ReST is the plain score; alpha_k = mean(g - H A / 2) = mean(w A)
    alpha = (w * a).mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(exp.raw, (alpha * a).sum(dim=1))


def test_rest_score():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 2]), reduction="none")
    torch.testing.assert_close(rest([1, 2])(logits), logits[[0, 1], [1, 2]] - ce)


def test_options_are_checked(resnet):
    with pytest.raises(camlens.CamlensValueError, match="score must be one of rest, logit"):
        camlens.ShapleyCAM(resnet[0], score="softmax")
    assert repr(camlens.ShapleyCAM(resnet[0])) == "ShapleyCAM(layer='auto', score='rest')"
