"""Library calls change nothing outside themselves: no process-wide ReLU swap, no matplotlib
backend switch, no progress bar unless asked."""

from __future__ import annotations

import threading
import time

import pytest
import torch
import torch.nn as nn
from toy_models import SmallCNN

import camlens


def _attribution(model: nn.Module, x: torch.Tensor, method: str) -> torch.Tensor:
    return camlens.explain(model, x, method=method, target=1).extra["attribution"]


def test_guided_backprop_in_one_thread_leaves_another_threads_saliency_plain() -> None:
    guided_model, plain_model = SmallCNN(seed=1).eval(), SmallCNN(seed=2).eval()
    generator = torch.Generator().manual_seed(0)
    x_guided = torch.rand(4, 3, 96, 96, generator=generator)  # the longer call: its ReLUs are
    x_plain = torch.rand(1, 3, 32, 32, generator=generator)  # guided most of the time
    serial = {
        "guided-backprop": _attribution(guided_model, x_guided, "guided-backprop"),
        "saliency": _attribution(plain_model, x_plain, "saliency"),
    }
    # a guided gradient leaking into the plain model would show: the two differ there
    assert not torch.allclose(
        serial["saliency"], _attribution(plain_model, x_plain, "guided-backprop")
    )
    jobs = {"guided-backprop": (guided_model, x_guided), "saliency": (plain_model, x_plain)}
    start = threading.Barrier(2)
    stop = threading.Event()
    wrong: dict[str, list[object]] = {name: [] for name in jobs}
    runs = dict.fromkeys(jobs, 0)

    def work(method: str) -> None:
        model, x = jobs[method]
        start.wait()
        try:
            while runs[method] < 200 and not (stop.is_set() and runs[method] >= 10):
                got = _attribution(model, x, method)
                runs[method] += 1
                if not torch.allclose(got, serial[method], rtol=0, atol=1e-6):
                    wrong[method].append(runs[method])
        except BaseException as error:  # reported below with the method's name
            wrong[method].append(error)
        stop.set()

    threads = [threading.Thread(target=work, args=(method,)) for method in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == {"guided-backprop": [], "saliency": []}, runs


def test_guided_backprop_changes_no_function_of_torch_during_the_call() -> None:
    model = SmallCNN(seed=1).eval()
    functions = (torch.relu, torch.relu_, nn.functional.relu, nn.functional.relu_)
    seen = []
    model.fc.register_forward_hook(lambda *_: seen.append((torch.relu, nn.functional.relu)))
    camlens.explain(model, torch.rand(1, 3, 32, 32), method="guided-backprop")
    assert seen == [functions[::2]]
    assert (torch.relu, torch.relu_, nn.functional.relu, nn.functional.relu_) == functions


def test_plots_leave_matplotlib_backend_as_it_was(tmp_path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    from camlens import metrics
    from camlens.metrics.report import MethodScores, plot_curves

    model = SmallCNN(seed=1).eval()
    result = metrics.sanity_check(model, torch.rand(2, 3, 32, 32), "gradcam", layers=["fc"])
    scores = MethodScores("gradcam")
    scores.add("deletion", torch.tensor([0.2, 0.4]))
    scores.add_curves("deletion", torch.tensor([[1.0, 0.5, 0.0], [1.0, 0.4, 0.1]]))
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a user's choice, not Agg
    try:
        sanity = metrics.plot_sanity([result], tmp_path / "sanity.png")
        assert matplotlib.get_backend() == "svg"
        (curves,) = plot_curves([scores], tmp_path)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    for path in (sanity, curves):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert curves.name == "deletion.png"


class _Slow(SmallCNN):
    """A model whose every forward takes 0.14 s: a Score-CAM call of 16 masked forwards lasts
    past the bar's 2 s delay (the bar starts at the fifteenth)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.14)
        return super().forward(x)


def test_score_cam_draws_no_progress_bar_unless_asked(capfd, monkeypatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich draws as on a terminal
    model = _Slow(seed=1).eval()
    x = torch.rand(1, 3, 16, 16)
    options = {"batch_size": 1, "precision": "fp32"}  # 16 channels, one at a time
    camlens.ScoreCAM(model, "features.2", **options)(x)
    assert capfd.readouterr() == ("", "")
    camlens.ScoreCAM(model, "features.2", progress=True, **options)(x)
    out, err = capfd.readouterr()
    assert out == "" and "Score-CAM" in err


def test_train_prints_nothing_unless_asked(tmp_path, capfd, monkeypatch) -> None:
    from training_data import FAST, gray_folder

    monkeypatch.setenv("FORCE_COLOR", "1")
    data = gray_folder(tmp_path / "data")
    options = {key: value for key, value in FAST.items() if key != "progress"}
    camlens.train(data, tmp_path / "quiet", **options)  # progress=True prints: test_training
    assert capfd.readouterr() == ("", "")


class SlowWide(nn.Module):
    """160 channels at ``conv``, and 0.6 s per batch of several images: Score-CAM's masked
    forwards (5 batches of 32) last past its bar's 2 s delay; one-image forwards are fast."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 160, 3, padding=1)
        self.fc = nn.Linear(160, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:
            time.sleep(0.6)
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_camlens_explain_still_shows_score_cams_bar(tmp_path, monkeypatch) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from camlens.cli import app

    monkeypatch.setenv("FORCE_COLOR", "1")
    (tmp_path / "images").mkdir()
    Image.new("RGB", (24, 24), (200, 30, 30)).save(tmp_path / "images" / "red.png")
    args = ["explain", str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--size", "16"]
    args += ["--model", "test_side_effects:SlowWide", "--method", "scorecam", "--layer", "conv"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Score-CAM" in result.output
