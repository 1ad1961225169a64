"""The GPU code paths, checked on a machine without one: the device each entry point uses, the
pinned, non-blocking host-to-device copy, the batch size chosen from free memory and the halving
of a batch that runs out of memory. CUDA calls are replaced by mocks (``monkeypatch``) or by the
``meta`` device (which, like a GPU, refuses a CPU tensor in the same operation)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import camlens
import camlens.runs.local as local
from camlens.errors import CamlensValueError
from camlens.images import pixels
from camlens.images.preprocessing import FIXED
from camlens.models.checkpoint import demo_path
from camlens.runs import memory
from camlens.runs import session as session_module
from camlens.runs.local import RunSettings
from camlens.runs.memory import choose_batch
from camlens.runs.session import Session, actor_device, device_for

SAMPLES = demo_path() / "samples"


@pytest.fixture(scope="module")
def demo_session() -> Session:
    return Session.from_spec("demo")


@pytest.fixture(scope="module")
def tiny() -> Session:
    """A 16 px CNN of three classes: a run's model at no cost."""
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3))  # fmt: skip
    return Session.from_model(model.eval(), size=16)


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


@pytest.mark.parametrize("mode", ["imagenet", "caffe"])
def test_preprocessing_constants_follow_the_batch_to_its_device(monkeypatch, mode):
    """The normalisation's constants are made on the batch's device (a GPU batch was normalised
    with CPU constants: "expected all tensors to be on the same device")."""
    made, real = [], torch.tensor
    monkeypatch.setattr(
        torch, "tensor", lambda *a, **k: made.append(k.get("device")) or real(*a, **k)
    )
    FIXED[mode](torch.zeros(2, 3, 4, 4))
    assert made and set(made) == {torch.device("cpu")}


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


def test_session_inputs_go_through_to_device(monkeypatch, tiny):
    seen = []
    monkeypatch.setattr(session_module, "to_device", lambda b, d: seen.append(d) or b)
    tiny.to_input([np.zeros((20, 24, 3), np.uint8)])
    assert seen == [torch.device("cpu")]


@pytest.mark.parametrize(
    ("gpus", "device", "expected"),
    [(1, "auto", "cuda"), (0.5, "cuda", "cuda"), (0, "auto", "cpu"), (0, "cpu", "cpu")],
)
def test_ray_actors_use_the_gpu_they_are_given(gpus, device, expected):
    """An actor holding a GPU (``--gpus-per-worker``) explains on it, one without on the CPU,
    whatever the driver's machine has."""
    assert actor_device(device, gpus) == expected


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
    with pytest.raises(CamlensValueError) as caught:  # Cluster.check() says it before Ray starts
        actor_device(device, gpus)
    assert str(caught.value) == message


def test_evaluate_takes_a_device():
    from typer.testing import CliRunner

    from camlens.cli import app

    result = CliRunner().invoke(app, ["evaluate", "--model", "demo", "--out", "x", "--device",
                                      "gpu0"])  # fmt: skip
    assert result.exit_code == 2
    assert "--device 'gpu0' is not a device name" in result.output


# ---------------------------------------------------------------------------- batch size
MIB = 1 << 20


class FakeCuda:
    """torch.cuda's memory counters, set by hand: ``allocated`` before the probe, ``peak`` after
    it, ``free`` on the card and ``reserved`` by torch's allocator."""

    def __init__(self, monkeypatch, *, allocated, peak, free, reserved):
        calls = []
        self.calls = calls
        monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: None)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: calls.append(d))
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: allocated)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: peak)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (free, 80 << 30))
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: reserved)


@pytest.mark.parametrize(
    ("peak_mib", "free_gib", "expected"),
    [
        (400, 10, 32),  # 150 MiB an image: 0.8 * 10 GiB / 150 MiB = 54.6 -> 32
        (100 + 2 * 8, 70, 256),  # 8 MiB an image: 7,168 fit, capped at 256
        (100 + 2 * 4000, 2, 1),  # 4,000 MiB an image, 2 GiB free: none fits -> 1
    ],
)
def test_auto_batch_from_free_memory(monkeypatch, demo_session, peak_mib, free_gib, expected):
    cuda = FakeCuda(monkeypatch, allocated=100 * MIB, peak=peak_mib * MIB, free=free_gib << 30,
                    reserved=100 * MIB)  # fmt: skip
    probed = []
    monkeypatch.setattr(demo_session, "device", torch.device("cuda:0"))

    def explain(session, x, paths, images, *args, **kwargs):
        probed.append((x.shape, len(images)))

    batch = choose_batch("auto", demo_session, ["gradcam"], explain=explain)
    assert batch == expected
    side = demo_session.size
    assert probed == [((memory.PROBE, 3, side, side), memory.PROBE)]
    assert cuda.calls == [torch.device("cuda:0")]


def test_the_probe_explains_blank_images_with_the_runs_methods(monkeypatch, tiny):
    monkeypatch.setattr(session_module, "to_device", lambda batch, device: batch)  # no CUDA
    monkeypatch.setattr(tiny, "device", torch.device("cuda"))
    probed = []
    monkeypatch.setattr(memory, "measured_batch", lambda device, probe: probed.append(probe(2)))
    choose_batch("auto", tiny, ["cam", "gradcam"])
    [explained] = probed
    assert explained.methods == ["cam", "gradcam"] and explained.maps["cam"].shape == (2, 16, 16)


def test_auto_batch_is_one_when_the_probe_runs_out_of_memory(monkeypatch):
    FakeCuda(monkeypatch, allocated=0, peak=0, free=1 << 30, reserved=0)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)

    def probe(count):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert memory.measured_batch(torch.device("cuda"), probe) == 1


def test_auto_batch_counts_memory_torch_holds_unused(monkeypatch):
    # 2 GiB free on the card and 6 GiB cached by torch: 0.8 * 8 GiB / 100 MiB = 65.5 -> 64
    FakeCuda(monkeypatch, allocated=1 << 30, peak=(1 << 30) + 200 * MIB, free=2 << 30,
             reserved=7 << 30)  # fmt: skip
    assert memory.measured_batch(torch.device("cuda"), lambda n: None) == 64


def test_batch_size_words(demo_session):
    assert choose_batch("auto", demo_session, ["gradcam"]) == memory.CPU_BATCH == 8  # the CPU
    assert choose_batch("24", demo_session, ["gradcam"]) == 24
    for bad in ("0", "-3", "big", 0):
        with pytest.raises(CamlensValueError) as caught:
            memory.batch_word(bad)
        assert str(caught.value) == (
            f"--batch-size must be a positive number of images or auto, got {bad!r}"
        )


def test_a_batch_out_of_gpu_memory_is_halved_not_failed(monkeypatch, tiny, tmp_path):
    """Batches of 2 that run out of memory above one image: the first is halved (2 -> 1 + 1),
    the next one is cut to 1 at once; every image is explained, none fails."""
    real = local.explain_batch
    sizes = []

    def explain(session, unit, paths, *args, **kwargs):
        sizes.append(len(paths))
        if len(paths) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(session, unit, paths, *args, **kwargs)

    monkeypatch.setattr(local, "explain_batch", explain)
    files = sorted(SAMPLES.glob("*/*.png"))[:3]
    settings = RunSettings(["cam"], batch_size=2)
    summary = local.explain_files(tiny, files, tmp_path / "out", settings, echo=print)
    assert (summary.done, summary.failures) == (3, [])
    assert sizes == [2, 1, 1, 1]
    assert sorted(camlens.load_run(tmp_path / "out").results["path"]) == sorted(map(str, files))


def test_one_image_out_of_memory_fails_alone(monkeypatch, tiny, tmp_path):
    def explain(session, unit, paths, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(local, "explain_batch", explain)
    files = sorted(SAMPLES.glob("*/*.png"))[:2]
    summary = local.explain_files(tiny, files, tmp_path / "out", RunSettings(["cam"]),
                                  echo=print)  # fmt: skip
    assert summary.done == 0
    assert [f.reason for f in summary.failures] == [
        "explaining failed: OutOfMemoryError: CUDA out of memory"
    ] * 2


def test_explain_checks_batch_size_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from camlens.cli import app

    out = tmp_path / "out"
    args = ["explain", str(SAMPLES), "--model", "demo", "--out", str(out), "--batch-size", "big"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "error: --batch-size must be a positive number of images or auto, got 'big'" in (
        result.output
    )
    assert not out.exists()


def test_the_local_engine_decodes_for_the_sessions_device(monkeypatch, tiny, tmp_path):
    """The decoding threads are told the model's device (JPEGs decoded on a GPU where it can)."""
    real, devices = local.decode, []

    def decode(paths, size, **kwargs):
        devices.append(kwargs["device"])
        return real(paths, size, **kwargs)

    monkeypatch.setattr(local, "decode", decode)
    files = sorted(SAMPLES.glob("*/*.png"))[:2]
    summary = local.explain_files(tiny, files, tmp_path / "out", RunSettings(["cam"]), echo=print)
    assert summary.done == 2 and devices == [torch.device("cpu")]


# ------------------------------------------------------------------- benchmarks/gpu_smoke.py
def smoke_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_smoke.py"
    spec = importlib.util.spec_from_file_location("gpu_smoke", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_smoke_says_there_is_no_cuda(monkeypatch, capsys):
    smoke = smoke_script()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exited:
        smoke.main([])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == smoke.NO_CUDA
    quick = smoke.options(["--device", "cpu", "--quick"])
    assert (quick.model, quick.batch, quick.size, quick.images) == ("resnet18", 4, 64, 8)
    full = smoke.options([])
    assert (full.model, full.batch, full.size, full.images) == ("resnet50", 64, 224, 300)


def test_a_ray_actor_halves_a_batch_out_of_gpu_memory(monkeypatch, tiny, tmp_path):
    """The model actors' batches (Ray engine), in this process: 3 images that run out of memory
    above one are explained 3 -> 2 + 1, 2 -> 1 + 1; all three written, none failed."""
    from camlens.runs import actors
    from camlens.runs.store import Store

    real, sizes = actors.explain_decoded, []

    def explain(session, settings, batch, truth, *args):
        sizes.append(len(batch.paths))
        if len(batch.paths) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(session, settings, batch, truth, *args)

    monkeypatch.setattr(actors, "explain_decoded", explain)
    files = sorted(SAMPLES.glob("*/*.png"))[:3]
    (tmp_path / "out").mkdir()
    worker = actors.Worker({}, RunSettings(["cam"]), Store.at(tmp_path / "out"), session=tiny)
    batch = {
        "index": np.arange(3), "path": np.array([str(f) for f in files]),
        "stem": np.array(["a", "b", "c"]), "true_name": np.array([""] * 3),
        "true_label": np.array([-1] * 3),
    }  # fmt: skip
    delivered = pickle.loads(worker(actors.decode_rows(batch, tiny.size))["delivered"][0])
    assert sizes == [3, 2, 1, 1, 1]
    assert (delivered.failures, delivered.traces) == ([], [])
    assert delivered.done == [(str(f), "cam") for f in files]
