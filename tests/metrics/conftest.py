"""Shared fixtures: a small CNN trained for a few seconds on scikit-learn's digits."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F


class DigitNet(nn.Module):
    """Three convolutions, global average pooling and one linear layer (CAM-compatible)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x))
        return self.fc(x.mean(dim=(2, 3)))


def digits(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits upscaled to ``size`` x ``size``, in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images, torch.tensor(data.target)


@pytest.fixture(scope="session")
def digit_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model, images, labels): DigitNet after 8 epochs of Adam on 16x16 digits (about 95%
    training accuracy, 5 to 10 s on one core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        images, labels = digits()
        model = DigitNet()
        optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
        for _ in range(8):
            order = torch.randperm(images.shape[0])
            for start in range(0, images.shape[0], 64):
                batch = order[start : start + 64]
                loss = F.cross_entropy(model(images[batch]), labels[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval(), images, labels
