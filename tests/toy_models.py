"""Test models: tiny networks with hand-set weights and seeded random CNNs (import them from
here, not from conftest: several conftest modules exist)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# Activations of the tiny models' explained layer (an identity 1x1 conv): 2 channels, 2x2.
TINY_X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [1.0, 0.0]]]])


class TinyGAP(nn.Module):
    """identity 1x1 conv -> global average pooling -> Linear(2, 2) with hand-set weights."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Conv2d(2, 2, 1, bias=False)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.layer.weight.copy_(torch.eye(2)[:, :, None, None])
            self.fc.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.5]]))
            self.fc.bias.copy_(torch.tensor([0.1, -0.2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer(x).mean(dim=(2, 3)))


class TinyDense(nn.Module):
    """identity 1x1 conv -> flatten -> Linear(8, 2): per-location gradients set by hand.

    For class 1, d y / d A is channel 0: [[1, -1], [0, 2]], channel 1: [[0.5, 0.5], [-1, 1]].
    """

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Conv2d(2, 2, 1, bias=False)
        self.fc = nn.Linear(8, 2)
        with torch.no_grad():
            self.layer.weight.copy_(torch.eye(2)[:, :, None, None])
            self.fc.weight.copy_(
                torch.tensor([[0.0] * 8, [1.0, -1.0, 0.0, 2.0, 0.5, 0.5, -1.0, 1.0]])
            )
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer(x).flatten(1))


class SmallCNN(nn.Module):
    """conv-relu-conv-relu -> post-layer op -> GAP -> linear, seeded; ``inplace`` selects how the
    ReLU after the explained layer (``features``) is applied, as torchvision's DenseNet does."""

    def __init__(self, classes: int = 5, inplace: bool = True, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
        )
        self.fc = nn.Linear(16, classes)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        out = F.relu(features, inplace=self.inplace)
        return self.fc(out.mean(dim=(2, 3)))


class NaNForNegative(SmallCNN):
    """:class:`SmallCNN` whose whole computation is NaN for an image of negative mean (the log of
    a negative number), and finite for the others."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x + 0 * torch.log(x.mean(dim=(1, 2, 3), keepdim=True)))


#: The error :class:`FailsForBright` raises, as torch words a shape mismatch.
SHAPE_ERROR = "mat1 and mat2 shapes cannot be multiplied (1x16 and 8x5)"


class FailsForBright(SmallCNN):
    """:class:`SmallCNN` that raises torch's shape error, as a model built for other inputs does,
    for a batch holding a bright image (input mean over 0.5, whether normalised or in [0, 1]);
    blank probes and dark images pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x.mean(dim=(1, 2, 3)) > 0.5).any()):
            raise RuntimeError(SHAPE_ERROR)
        return super().forward(x)


class FailsForBrightSegmenter(nn.Module):
    """A 3-class segmenter (conv -> ReLU -> 1x1 conv, ``{"out": (B, 3, H, W)}``) that raises
    torch's shape error for a batch holding a bright image, as :class:`FailsForBright`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if bool((x.mean(dim=(1, 2, 3)) > 0.5).any()):
            raise RuntimeError(SHAPE_ERROR)
        return {"out": self.head(self.features(x))}


def tiny_vit(classes: int = 5) -> torch.nn.Module:
    """A random-weight timm ViT for 32x32 inputs: 8x8 patches (a 4x4 grid), a class token, two
    blocks of two heads (the attention methods' contract model)."""
    import timm

    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=2,
        num_heads=2,
        embed_dim=32,
        num_classes=classes,
    ).eval()


def hf_vit() -> torch.nn.Module:
    """A random-weight Hugging Face ViT for 32x32 inputs (a 4x4 grid, 3 classes)."""
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    return transformers.ViTForImageClassification(config).eval()


def torchvision_vit() -> torch.nn.Module:
    """torchvision's ViT, its zero-initialised head drawn at random (else every score is a
    constant with zero gradients)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=5,
    ).eval()
    torch.nn.init.normal_(model.heads.head.weight)
    return model
