"""Fixtures for the command-line tests: a folder of images with bad files among them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CHELSEA = Path(__file__).parents[2] / "src" / "camlens" / "data" / "chelsea.jpg"  # skimage's cat


@pytest.fixture
def images(tmp_path) -> Path:
    """3 good images (the chelsea cat, an RGB PNG, a grayscale JPEG), a corrupt JPEG and a text
    file."""
    folder = tmp_path / "images"
    (folder / "more").mkdir(parents=True)
    shutil.copy(CHELSEA, folder / "chelsea.jpg")
    ramp = np.linspace(0, 255, 80 * 60 * 3).reshape(60, 80, 3).astype(np.uint8)
    Image.fromarray(ramp).save(folder / "ramp.png")
    Image.fromarray(ramp[..., 0].T.copy()).save(folder / "more" / "gray.jpg")
    (folder / "corrupt.jpg").write_bytes(CHELSEA.read_bytes()[:400])
    (folder / "notes.txt").write_text("not an image\n")
    return folder


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def model_args() -> list[str]:
    """A small random-weight model: nothing is downloaded, 64-pixel inputs keep it fast."""
    return ["--model", "torchvision:resnet18", "--weights", "none", "--size", "64"]


class Interrupt:
    """The local engine's ``explain_batch`` pressed Ctrl-C on its second batch: ``done`` holds
    the paths of the batch explained before; :meth:`undo` restores the real one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import camlens.runs.local as engine

        self.engine, self.real, self.done = engine, engine.explain_batch, []
        self.monkeypatch = monkeypatch
        monkeypatch.setattr(engine, "explain_batch", self._interrupted)

    def _interrupted(self, *args, **kwargs):
        if self.done:
            raise KeyboardInterrupt
        self.done.append(args[2])
        return self.real(*args, **kwargs)

    def undo(self) -> None:
        self.monkeypatch.setattr(self.engine, "explain_batch", self.real)


@pytest.fixture
def interrupt(monkeypatch) -> Interrupt:
    """A run interrupted (Ctrl-C) after its first batch."""
    return Interrupt(monkeypatch)
