"""The GPU code paths, checked on a machine without one: the device each entry point uses, the
pinned, non-blocking host-to-device copy, the batch size chosen from free memory and the halving
of a batch that runs out of memory. CUDA calls are replaced by mocks (``monkeypatch``) or by the
``meta`` device (which, like a GPU, refuses a CPU tensor in the same operation)."""

from __future__ import annotations

import pytest
import torch

from camlens.images import pixels
from camlens.images.preprocessing import FIXED


class Copies:
    """torch.Tensor.pin_memory and .to recorded (a CUDA copy without CUDA)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pinned = 0
        self.moves: list[tuple[torch.device, bool]] = []
        real_to = torch.Tensor.to

        def pin_memory(tensor: torch.Tensor) -> torch.Tensor:
            self.pinned += 1
            return tensor.clone()

        def to(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            target = args[0] if args else kwargs.get("device")
            if isinstance(target, (torch.device, str)) and torch.device(target).type == "cuda":
                self.moves.append((torch.device(target), kwargs.get("non_blocking", False)))
                return tensor
            return real_to(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
        monkeypatch.setattr(torch.Tensor, "to", to)


def test_to_device_pins_and_copies_without_blocking_for_cuda(monkeypatch):
    copies = Copies(monkeypatch)
    batch = torch.rand(2, 3, 8, 8)
    pixels.to_device(batch, "cuda:1")
    assert copies.pinned == 1
    assert copies.moves == [(torch.device("cuda:1"), True)]


def test_to_device_leaves_a_cpu_batch_alone(monkeypatch):
    copies = Copies(monkeypatch)
    batch = torch.rand(2, 3, 8, 8)
    assert pixels.to_device(batch, torch.device("cpu")) is batch
    assert pixels.pinned(batch, "cpu") is batch
    assert (copies.pinned, copies.moves) == (0, [])


@pytest.mark.parametrize("mode", ["imagenet", "caffe", "tf", "raw", "unit"])
def test_preprocessing_runs_on_the_batch_device(mode):
    """The normalisation's constants follow the batch to its device (a GPU batch was normalised
    with CPU constants: "expected all tensors to be on the same device")."""
    x = torch.zeros(2, 3, 4, 4, device="meta")
    assert FIXED[mode](x).device.type == "meta"
