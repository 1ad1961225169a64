"""Exit codes of every command: 0 done, 1 some inputs failed, 2 usage, 3 the run could not go on,
130 interrupted; one ``error:`` line on stderr, the traceback in ``OUT/camlens.log``."""

from __future__ import annotations

import errno
import os
import shlex

import pytest
import torch
import torchvision
from typer.testing import CliRunner

import camlens
import camlens.runs.local as engine
from camlens.cli import app
from camlens.errors import CamlensValueError
from camlens.runs.writer import RunWriter

runner = CliRunner()


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def no_model(monkeypatch) -> None:
    monkeypatch.setattr(
        "camlens.models.specs.load_spec", lambda *a, **k: pytest.fail("model loaded")
    )


def explain(images, model_args, out, *extra):
    args = ["explain", str(images), *model_args, "--batch-size", "1", "--out", str(out), "-q"]
    return runner.invoke(app, [*args, *extra])


def test_out_that_is_a_file_is_a_usage_error_before_the_model_loads(images, tmp_path, monkeypatch):
    no_model(monkeypatch)
    somefile = tmp_path / "somefile"
    somefile.write_text("keep me\n")
    for out in (somefile, somefile / "sub"):
        result = explain(images, ["--model", "torchvision:resnet18"], out)
        assert result.exit_code == 2, result.output
        (line,) = errors(result)
        assert str(somefile) in line and "is a file" in line
    assert somefile.read_text() == "keep me\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_unwritable_out_is_a_usage_error_before_the_model_loads(images, tmp_path, monkeypatch):
    no_model(monkeypatch)
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        result = explain(images, ["--model", "torchvision:resnet18"], parent / "out")
    finally:
        parent.chmod(0o700)
    assert result.exit_code == 2, result.output
    (line,) = errors(result)
    assert "not writable" in line


def test_disk_full_exits_3_keeps_the_rows_and_logs_the_traceback(
    images, model_args, tmp_path, monkeypatch
):
    real, calls = RunWriter.write, []

    def full(self, records, failures=()):
        if records and calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        calls.extend(r.row["path"] for r in records)
        return real(self, records, failures)

    monkeypatch.setattr(RunWriter, "write", full)
    out = tmp_path / "out"
    result = explain(images, model_args, out)
    assert result.exit_code == 3, result.output
    (line,) = errors(result)
    assert "No space left on device" in line and "free some space" in line
    assert "--resume continues the run" in line and str(out / "camlens.log") in line
    assert "Traceback" not in result.output
    log = (out / "camlens.log").read_text()
    assert "Traceback (most recent call last)" in log and "No space left on device" in log
    assert calls and set(calls) <= set(camlens.load_run(out).results["path"])


def test_an_internal_error_exits_3_and_says_to_resume(images, model_args, tmp_path, monkeypatch):
    def broken(*a, **k):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(engine, "explain_batch", broken)
    out = tmp_path / "out"
    result = explain(images, model_args, out)
    assert result.exit_code == 3, result.output
    (line,) = errors(result)
    assert line.startswith("error: internal error (ZeroDivisionError: division by zero)")
    assert "--resume continues the run" in line
    assert "ZeroDivisionError" in (out / "camlens.log").read_text()


def test_a_camlens_error_during_the_run_exits_2_with_its_message(
    images, model_args, tmp_path, monkeypatch
):
    def locked(self, *a, **k):
        raise CamlensValueError("the run folder is locked by pid 1")

    monkeypatch.setattr(RunWriter, "__init__", locked)
    result = explain(images, model_args, tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert errors(result) == ["error: the run folder is locked by pid 1"]


def test_ctrl_c_says_what_was_kept_and_the_exact_resume_command(
    images, model_args, tmp_path, interrupt
):
    out = tmp_path / "out"
    result = explain(images, model_args, out, "--method", "gradcam,cam")
    assert result.exit_code == 130, result.output
    (line,) = errors(result)
    kept = len(camlens.load_run(out).results)
    assert line.startswith(f"error: interrupted; {kept} row(s) kept in {out}; continue with: ")
    words = shlex.split(line.split("continue with: ", 1)[1])
    assert words[:3] == ["camlens", "explain", str(images)] and words[-1] == "--resume"
    interrupt.undo()
    again = runner.invoke(app, words[1:])
    assert again.exit_code == 1, again.output  # the corrupt JPEG fails again (notes.txt: ignored)
    (line,) = errors(again)
    assert "1 input(s) failed" in line
    rows = camlens.load_run(out).results
    assert len(rows) == 6 and len(set(rows["path"])) == 3  # 3 images, 2 methods, none twice


def test_evaluate_with_a_torchscript_model_is_a_usage_error(tmp_path, images):
    torch.jit.script(torchvision.models.resnet18().eval()).save(str(tmp_path / "net.pt"))
    args = ["--model", str(tmp_path / "net.pt"), "--data", str(images), "--size", "32"]
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", *args, "--method", "gradcam", "--out", str(out)])
    assert result.exit_code == 2, result.output
    (line,) = errors(result)
    assert "is a TorchScript model, which takes no hooks" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("command", "target"),
    [
        (["train", "data", "--out"], "camlens.models.training.train"),
        (["evaluate", "--model", "demo", "--out"], "camlens.runs.evaluation.evaluate"),
        (["demo", "--out"], "camlens.runs.demo.run_demo"),
    ],
)
def test_every_command_exits_3_on_a_failed_write(tmp_path, monkeypatch, command, target):
    def full(*a, **k):
        raise OSError(errno.EACCES, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr(target, full)
    out = tmp_path / "out"
    result = runner.invoke(app, [*command, str(out)])
    assert result.exit_code == 3, result.output
    (line,) = errors(result)
    assert "Permission denied" in line and "check the permissions" in line
    assert "--resume" not in line and str(out / "camlens.log") in line
    assert "PermissionError" in (out / "camlens.log").read_text()
