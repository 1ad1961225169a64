"""Small random-weight detection and segmentation models, importable as model specs
(``task_models:detector``) by the app and command-line tests."""

from __future__ import annotations

import torch
import torchvision
from torchvision.models import detection as tvd
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead


def detector() -> torch.nn.Module:
    """A Faster R-CNN on a 64-channel ResNet-18 FPN, 128-pixel inputs, 3 classes."""
    torch.manual_seed(0)
    layers = {f"layer{i}": str(i - 1) for i in range(1, 5)}
    backbone = BackboneWithFPN(torchvision.models.resnet18(), layers, [64, 128, 256, 512], 64)
    return tvd.FasterRCNN(
        backbone,
        box_score_thresh=0.0,
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=50,
        box_detections_per_img=10,
        box_head=TwoMLPHead(64 * 49, 64),
        box_predictor=FastRCNNPredictor(64, 3),
        min_size=128,
        max_size=128,
    )


def segmenter() -> torch.nn.Module:
    """torchvision's LRASPP (MobileNetV3), 3 classes."""
    torch.manual_seed(0)
    return torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3
    )
