"""Detectors: torchvision's Faster R-CNN, RetinaNet, FCOS and SSD with random weights, one map per
detection, agreement with pytorch-grad-cam's FasterRCNNBoxScoreTarget without its IoU term."""

from __future__ import annotations

import pytest
import torch
import torchvision
from needs import need
from torchvision.models import detection as tvd
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

import camlens
from camlens.methods._registry import get

SIZE = dict(min_size=128, max_size=128)


def _image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(seed))


def _backbone(levels=(1, 2, 3, 4), p6p7: bool = False) -> BackboneWithFPN:
    """A ResNet-18 FPN of 64 channels: torchvision's detectors at a test's size."""
    torch.manual_seed(0)
    channels = {1: 64, 2: 128, 3: 256, 4: 512}
    return BackboneWithFPN(
        torchvision.models.resnet18(),
        {f"layer{level}": str(k) for k, level in enumerate(levels)},
        [channels[level] for level in levels],
        64,
        extra_blocks=LastLevelP6P7(64, 64) if p6p7 else None,
    )


@pytest.fixture(scope="module")
def faster_rcnn():
    model = tvd.FasterRCNN(
        _backbone(),
        box_score_thresh=0.0,
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=50,
        box_detections_per_img=10,
        box_head=TwoMLPHead(64 * 7 * 7, 64),
        box_predictor=FastRCNNPredictor(64, 3),
        **SIZE,
    )
    return model.eval()


class _FixedBoxes(torch.nn.Module):
    """The detector with its boxes detached: the IoU term of pytorch-grad-cam's target then has
    no gradient, and its target differs from ours by a constant."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return [{**out, "boxes": out["boxes"].detach()} for out in self.model(x)]


def test_faster_rcnn_agrees_with_pytorch_grad_cam(faster_rcnn):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    x = _image()
    found = faster_rcnn(x)[0]
    boxes, labels = found["boxes"][[0, 3]].detach(), found["labels"][[0, 3]]
    layer = faster_rcnn.backbone.fpn.layer_blocks[0]  # small boxes are pooled from the finest level
    exp = camlens.explain(
        faster_rcnn, x, "gradcam", camlens.targets.detection(boxes, labels), layer=layer
    )
    torch.testing.assert_close(exp.scores, found["scores"][[0, 3]].sum()[None].detach())
    assert exp.maps.amax() == 1
    with pytorch_grad_cam.GradCAM(model=_FixedBoxes(faster_rcnn), target_layers=[layer]) as cam:
        theirs = cam(x, targets=[FasterRCNNBoxScoreTarget(labels, boxes.numpy())])
    assert (exp.maps - torch.from_numpy(theirs)).abs().max() < 1e-4


def test_one_map_per_detection_tells_objects_apart(faster_rcnn):
    x = _image()
    result = camlens.explain_detections(faster_rcnn, x, "gradcam", threshold=0.3, limit=3)
    assert len(result) == 3 and result.explanation.maps.shape == (3, 128, 128)
    assert result.explanation.layer == "+".join(f"backbone.fpn.layer_blocks.{i}" for i in range(4))
    # each map is its own detection's: the same as explaining that detection alone
    for n in range(3):
        alone = camlens.explain(
            faster_rcnn,
            x,
            "gradcam",
            camlens.targets.detection(result.boxes[n : n + 1], result.labels[n : n + 1]),
        )
        torch.testing.assert_close(alone.scores, result.scores[n : n + 1])
        assert (alone.maps[0] - result.explanation.maps[n]).abs().max() < 1e-4
    assert (result.explanation.maps[0] - result.explanation.maps[1]).abs().max() > 0.1


def test_eigencam_per_detection_stays_in_its_box(faster_rcnn):
    result = camlens.explain_detections(faster_rcnn, _image(), "eigencam", threshold=0.3, limit=2)
    maps = result.explanation.maps
    assert maps.amax() == 1 and result.explanation.extra["in_box"]
    for n, (x0, y0, x1, y1) in enumerate(result.boxes.tolist()):
        rows, cols = torch.nonzero(maps[n] > 0, as_tuple=True)
        assert (cols + 0.5 >= x0).all() and (cols + 0.5 <= x1).all()
        assert (rows + 0.5 >= y0).all() and (rows + 0.5 <= y1).all()


@pytest.mark.parametrize(
    "build, layers",
    [
        (
            lambda: tvd.RetinaNet(
                _backbone((2, 3, 4), p6p7=True), num_classes=3, score_thresh=0.0, **SIZE
            ),
            [f"backbone.fpn.layer_blocks.{i}" for i in range(3)],
        ),
        (
            lambda: tvd.FCOS(
                _backbone((2, 3, 4), p6p7=True), num_classes=3, score_thresh=0.0, **SIZE
            ),
            [f"backbone.fpn.layer_blocks.{i}" for i in range(3)],
        ),
        (
            lambda: tvd.ssdlite320_mobilenet_v3_large(
                weights=None, weights_backbone=None, num_classes=3, score_thresh=0.0
            ),
            ["backbone.features.0", "backbone.features.1"],
        ),
    ],
    ids=["retinanet", "fcos", "ssdlite"],
)
def test_auto_layers_of_detectors(build, layers):
    torch.manual_seed(0)
    model = build().eval()
    x = _image(1)
    found = model(x)[0]
    area = (found["boxes"][:, 2:] - found["boxes"][:, :2]).prod(dim=1)
    pick = int(torch.nonzero(area > 4)[0])  # random weights also give zero-area boxes
    target = camlens.targets.detection(
        found["boxes"][pick : pick + 1].detach(), found["labels"][pick : pick + 1]
    )
    exp = camlens.explain(model, x, "gradcam", target)
    assert exp.layer == "+".join(layers)
    torch.testing.assert_close(exp.scores, found["scores"][pick : pick + 1].detach())
    assert exp.maps.shape == (1, 128, 128) and exp.maps.amax() == 1


def test_detector_errors(faster_rcnn):
    with pytest.raises(camlens.CamlensTypeError) as error:
        camlens.explain(faster_rcnn, _image())
    assert str(error.value).endswith(
        "; for a detector pass target=camlens.targets.detection(boxes, labels)"
    )
    with pytest.raises(camlens.CamlensValueError) as error:
        camlens.explain(
            faster_rcnn, _image(), target=camlens.targets.detection([[0, 0, 1, 1]], [1])
        )
    assert str(error.value) == (
        "no detection matches the reference boxes (same label, IoU >= 0.5) in any image; check "
        "the labels or lower iou"
    )


def test_no_detection_to_explain(faster_rcnn):
    with pytest.raises(camlens.CamlensValueError) as error:
        camlens.explain_detections(faster_rcnn, _image(), threshold=1.5)
    assert str(error.value) == (
        "no detection to explain: none scores at least threshold=1.5; lower it"
    )


def test_ultralytics_yolo(tmp_path_factory, monkeypatch):
    # ultralytics writes a settings file on import: keep it in a temporary folder
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics")))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    ultralytics = need("ultralytics")
    torch.manual_seed(0)
    yolo = ultralytics.YOLO("yolov8n.yaml")  # built from its yaml: random weights, no download
    modes = [m.training for m in yolo.model.modules()]
    x = _image(2)
    with torch.no_grad():  # the network itself in eval mode, never the YOLO wrapper's .eval()
        raw = yolo.model.eval()(x)
    for module, mode in zip(yolo.model.modules(), modes):
        module.training = mode
    boxes, labels, scores = camlens.targets.detections_of(raw)[0]
    pick = scores.topk(2).indices
    for method in ("gradcam", "eigencam"):
        exp = camlens.explain(
            yolo, x, method, camlens.targets.detection(boxes[pick], labels[pick], iou=0.9)
        )
        assert exp.layer == "model.15+model.18+model.21"  # the maps the Detect head reads
        torch.testing.assert_close(exp.scores, scores[pick].sum()[None])
        assert exp.maps.shape == (1, 128, 128) and exp.maps.amax() == 1
    assert yolo.trainer is None  # nothing started training
    assert [m.training for m in yolo.model.modules()] == modes  # flags restored
    result = camlens.explain_detections(yolo, x, "gradcam", threshold=0.0, limit=2)
    assert len(result) == 2 and result.explanation.maps.shape == (2, 128, 128)


FEWER = {
    "scorecam": {"top_k_channels": 8},
    "ablationcam": {"batch_size": 64},
    "integrated-gradients": {"steps": 8},
    "smoothgrad": {"samples": 4},
    "reciprocam": {"layer": "backbone.fpn.layer_blocks.3"},  # a forward per location: 4x4
}


#: cam: its head is Faster R-CNN's box predictor, not one nn.Linear on a map; finercam: it
#: contrasts class logits, which a detection target does not have
REFUSED = {"cam": "method 'cam' needs a model", "finercam": "target must be None, an int"}


def test_every_method_but_cam_explains_a_detection(faster_rcnn):
    x = _image()
    found = faster_rcnn(x)[0]
    target = camlens.targets.detection(found["boxes"][:1].detach(), found["labels"][:1])
    for method in camlens.methods(faster_rcnn):
        options = {"layer": "backbone.fpn.layer_blocks.0"} if get(method).uses_layer else {}
        options.update(FEWER.get(method, {}))  # fewer forwards: the same definition
        if method in REFUSED:
            with pytest.raises(camlens.CamlensValueError, match=REFUSED[method]):
                camlens.explain(faster_rcnn, x, method, target, **options)
            continue
        if method == "shapleycam":  # torchvision's roi_align has no second derivative
            with pytest.raises(camlens.CamlensValueError, match="needs second derivatives"):
                camlens.explain(faster_rcnn, x, method, target, **options)
            continue
        exp = camlens.explain(faster_rcnn, x, method, target, **options)
        torch.testing.assert_close(exp.scores, found["scores"][:1].detach(), msg=method)
        assert exp.maps.shape == (1, 128, 128), method
        # Recipro-CAM keeps one feature location per forward: no detection survives that, every
        # score is 0, and the map is zeros (docs/methods.md)
        assert exp.maps.amax() == (0 if method == "reciprocam" else 1), method
