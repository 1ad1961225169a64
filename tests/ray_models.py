"""A model for the Ray engine's tests, built by a factory spec (``ray_models:killer``) in the Ray
workers: it kills its own process on its first real batch, once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch
import torch.nn as nn

#: The file whose existence says the kill happened (set by the test before Ray starts).
MARKER = "CAMLENS_KILL_MARKER"
#: The test process's id: it is never killed, whatever runs the model there.
SPARE = "CAMLENS_KILL_SPARE"


class Killer(nn.Module):
    """conv -> ReLU -> global average pooling -> Linear(8, 10), random weights. Its first forward
    on more than one image (a batch, not the session's one-image probe) in a process other than
    the test's writes the marker file and sends SIGKILL to its own process."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        marker = os.environ.get(MARKER)
        spare = int(os.environ.get(SPARE, "0"))
        if marker and x.shape[0] > 1 and os.getpid() != spare and not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return self.fc(self.features(x).mean(dim=(2, 3)))


def killer() -> Killer:
    return Killer().eval()


def fails_for_bright() -> nn.Module:
    """toy_models.FailsForBright: raises a RuntimeError for a batch holding a bright image."""
    from toy_models import FailsForBright

    return FailsForBright().eval()
