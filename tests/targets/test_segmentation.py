"""Segmentation models with camlens.targets.segmentation: torchvision's DeepLabV3, FCN and LRASPP,
a one-channel U-Net returning a tensor, a Hugging Face SegFormer; agreement with pytorch-grad-cam's
SemanticSegmentationTarget (random weights, small inputs)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from needs import need
from torchvision.models import segmentation as tvs

import camlens


def _image(size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    build = getattr(tvs, name)
    return build(weights=None, weights_backbone=None, num_classes=3).eval()


class _Out(nn.Module):
    """pytorch-grad-cam needs a model returning a tensor: the torchvision model's ``"out"``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def test_deeplab_agrees_with_pytorch_grad_cam():
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    model, x = _build("deeplabv3_mobilenet_v3_large"), _image()
    with torch.no_grad():
        logits = model(x)["out"]
    category = int(logits.argmax(1).flatten().mode().values)  # the most predicted class
    mask = (logits.argmax(1)[0] == category).float()
    exp = camlens.explain(model, x, "gradcam", camlens.targets.segmentation(category))
    assert exp.layer == "classifier.3"  # the last map before the class projection
    torch.testing.assert_close(exp.scores, (logits[:, category] * mask).sum()[None])
    layer = model.classifier[3]
    with GradCAM(model=_Out(model), target_layers=[layer]) as cam:
        theirs = cam(x, targets=[SemanticSegmentationTarget(category, mask.numpy())])
    assert exp.maps.amax() == 1
    assert (exp.maps - torch.from_numpy(theirs)).abs().max() < 1e-4
    with pytest.raises(camlens.CamlensValueError) as error:
        camlens.explain(model, x)  # no target: a dense output has no single class
    assert str(error.value) == (
        "the model's output has shape (1, 3, 64, 64), not (B, classes); pass target=callable "
        "mapping the output to (B,) scores (camlens.targets.segmentation(CLASS) for a "
        "segmentation model)"
    )


@pytest.mark.parametrize(
    "name, layer",
    [("fcn_resnet50", "classifier.2"), ("lraspp_mobilenet_v3_large", "classifier.cbr")],
)
def test_auto_layer_and_score_of_torchvision_segmenters(name, layer):
    model, x = _build(name), _image()
    with torch.no_grad():
        logits = model(x)["out"]
    category = int(logits.argmax(1).flatten().mode().values)
    mask = torch.zeros(64, 64)
    mask[8:40, 16:48] = 1  # a region given by the user instead of the predicted pixels
    exp = camlens.explain(model, x, "gradcam", camlens.targets.segmentation(category, mask))
    assert exp.layer == layer and exp.maps.amax() == 1
    torch.testing.assert_close(exp.scores, (logits[:, category] * mask).sum()[None])


class TinyUNet(nn.Module):
    """A U-Net with one output channel (a binary, sigmoid segmentation model) returning a tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.bottom = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.decode = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        skip = self.down(x)
        return self.head(self.decode(torch.cat([skip, self.up(self.bottom(skip))], dim=1)))


def test_one_channel_unet():
    torch.manual_seed(0)
    model, x = TinyUNet().eval(), _image(32)
    with torch.no_grad():
        logits = model(x)[:, 0]
    foreground = (logits > 0).float()
    assert 0 < foreground.sum() < 32 * 32
    for category, expected in (
        (1, (logits * foreground).sum()),
        (0, -(logits * (1 - foreground)).sum()),
    ):
        exp = camlens.explain(model, x, "hirescam", camlens.targets.segmentation(category))
        assert exp.layer == "decode"  # not the one-channel head
        torch.testing.assert_close(exp.scores, expected[None])
        # HiResCAM's identity at the last map before a 1x1 head: sum_ij L_ij = the score - bias term
        bias = model.head.bias[0] * (foreground if category else 1 - foreground).sum()
        sign = 1 if category else -1
        torch.testing.assert_close(
            exp.raw.sum(), expected - sign * bias.detach(), rtol=1e-4, atol=1e-4
        )


def test_hugging_face_segformer():
    transformers = need("transformers")
    config = transformers.SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[16, 32],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=32,
        num_labels=3,
    )
    torch.manual_seed(0)
    model, x = transformers.SegformerForSemanticSegmentation(config).eval(), _image()
    with torch.no_grad():
        logits = model(x).logits  # (1, 3, 16, 16): a quarter of the input's size
    mask = torch.zeros(64, 64)
    mask[:32] = 1  # at the input's size: the top half of the logits
    exp = camlens.explain(model, x, "gradcam", camlens.targets.segmentation(2, mask))
    assert exp.layer == "decode_head.activation" and exp.maps.shape == (1, 64, 64)
    torch.testing.assert_close(exp.scores, logits[:, 2, :8].sum()[None])
