"""The GPU code paths, checked on a machine without one: the device each entry point uses, the
pinned, non-blocking host-to-device copy, the batch size chosen from free memory and the halving
of a batch that runs out of memory. CUDA calls are replaced by mocks (``monkeypatch``) or by the
``meta`` device (which, like a GPU, refuses a CPU tensor in the same operation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from needs import need

from camlens.errors import CamlensValueError
from camlens.images import pixels
from camlens.images.preprocessing import FIXED
from camlens.runs import session as session_module
from camlens.runs.distributed import Cluster
from camlens.runs.session import Session, device_for


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


# ---------------------------------------------------------------------------- device choice
def test_device_auto_takes_the_gpu_torch_sees(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_for("auto") == torch.device("cuda")
    assert device_for("cuda:1") == torch.device("cuda:1")
    with pytest.raises(CamlensValueError) as caught:
        device_for("cuda:2")
    assert str(caught.value) == (
        "--device cuda:2: torch sees 2 CUDA GPU(s) (cuda:0..cuda:1); use one of them or "
        "--device cpu"
    )


def test_an_unavailable_device_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert device_for("auto") == torch.device("cpu")
    with pytest.raises(CamlensValueError, match=r"^--device cuda:1 was asked for, but torch sees"):
        device_for("cuda:1")
    with pytest.raises(CamlensValueError) as caught:
        device_for("mps")
    assert str(caught.value) == (
        "--device mps was asked for, but torch sees no Apple GPU (MPS); use --device cpu"
    )


def test_session_inputs_go_through_to_device(monkeypatch):
    seen = []
    monkeypatch.setattr(session_module, "to_device", lambda b, d: seen.append(d) or b)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(784, 3))
    session = Session.from_model(model, size=16)
    session.to_input([np.zeros((20, 24, 3), np.uint8)])
    assert seen[-1] == torch.device("cpu")


@pytest.mark.parametrize(
    ("gpus", "device", "expected"),
    [(1, "auto", "cuda"), (0.5, "cuda", "cuda"), (0, "auto", "cpu"), (0, "cpu", "cpu")],
)
def test_ray_actors_use_the_gpu_they_are_given(gpus, device, expected):
    """An actor holding a GPU (``--gpus-per-worker``) explains on it, one without on the CPU,
    whatever the driver's machine has."""
    assert Cluster("auto", 1, gpus, device=device).actor_device() == expected


@pytest.mark.parametrize(
    ("gpus", "device", "message"),
    [
        (0, "cuda", "--device cuda: the Ray actors hold no GPU; pass --gpus-per-worker 1 (or "
         "more) or --device auto"),
        (1, "cpu", "--device cpu: the Ray actors would hold GPUs they never use; pass "
         "--gpus-per-worker 0 or --device auto"),
        (1, "cuda:1", "--device cuda:1: a Ray actor sees only the GPU(s) Ray gives it; pass "
         "--device auto or cuda"),
    ],
)  # fmt: skip
def test_ray_device_and_gpus_must_agree(gpus, device, message):
    need("ray")
    with pytest.raises(CamlensValueError) as caught:
        Cluster("auto", 1, gpus, device=device).check()
    assert str(caught.value) == message


def test_evaluate_takes_a_device():
    from typer.testing import CliRunner

    from camlens.cli import app

    result = CliRunner().invoke(app, ["evaluate", "--model", "demo", "--out", "x", "--device",
                                      "gpu0"])  # fmt: skip
    assert result.exit_code == 2
    assert "--device 'gpu0' is not a device name" in result.output
