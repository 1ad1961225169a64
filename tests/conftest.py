"""Shared fixtures: the toy models of ``toy_models`` and a seeded image batch."""

from __future__ import annotations

import PIL.Image
import pytest
import torch
from toy_models import SmallCNN, TinyDense, TinyGAP, tiny_vit

#: What ultralytics replaces on import (PIL.Image.open, to try installing a HEIF plugin on any
#: file Pillow cannot identify; torch.save): put back after every test, so that one YOLO test
#: cannot change how every later test reads images.
_PATCHED_BY_ULTRALYTICS = ((PIL.Image, "open", PIL.Image.open), (torch, "save", torch.save))


@pytest.fixture(autouse=True)
def _undo_ultralytics_patches():
    yield
    for owner, name, original in _PATCHED_BY_ULTRALYTICS:
        setattr(owner, name, original)


@pytest.fixture
def vit() -> torch.nn.Module:
    """A random-weight timm ViT (32x32 inputs, 5 classes): see ``toy_models.tiny_vit``."""
    return tiny_vit()


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
