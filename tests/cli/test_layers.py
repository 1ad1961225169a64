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
