"""Shared fixtures: the toy models of ``toy_models`` and a seeded image batch."""

from __future__ import annotations

import pytest
import torch
from toy_models import SmallCNN, TinyDense, TinyGAP


@pytest.fixture
def tiny_gap() -> TinyGAP:
    return TinyGAP().eval()


@pytest.fixture
def tiny_dense() -> TinyDense:
    return TinyDense().eval()


@pytest.fixture
def small_cnn() -> SmallCNN:
    return SmallCNN().eval()


@pytest.fixture
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 32, 32, generator=generator)
