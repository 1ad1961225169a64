"""``camlens layers``: candidate layers with shapes, the auto choice marked."""

from __future__ import annotations

from typer.testing import CliRunner

from camlens.cli import app


def test_layers_marks_auto():
    result = CliRunner().invoke(app, ["layers", "--model", "torchvision:resnet18", "--size", "64"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    (auto,) = [line for line in lines if line.startswith("*")]
    assert auto.split() == ["*", "layer4", "Sequential", "512x2x2", "nchw"]
    assert any(line.split()[:2] == ["layer3", "Sequential"] for line in lines)
    assert lines[-1] == "auto: layer4"


def test_layers_bad_spec():
    result = CliRunner().invoke(app, ["layers", "--model", "torchvision:resnet81"])
    assert result.exit_code == 2
    assert "close names: resnet18" in result.output


def test_layers_surveys_the_demo_model_at_the_size_explain_runs_it():
    """The shapes printed are those at the session's input side (the demo model's 64, as
    ``camlens explain`` feeds it), not at a fixed 224."""
    import torch

    import camlens
    from camlens.runs.session import Session

    session = Session.from_spec("demo")
    infos, auto = camlens.layers(session.model, session.native(torch.zeros(1, 3, 64, 64)))
    assert session.size == 64
    result = CliRunner().invoke(app, ["layers", "--model", "demo"])
    assert result.exit_code == 0, result.output
    printed = {line[2:].split()[0]: line.split()[-2] for line in result.output.splitlines()[1:-1]}
    assert printed == {info.name: "x".join(map(str, info.shape[1:])) for info in infos}
    assert result.output.splitlines()[-1] == f"auto: {auto}"
