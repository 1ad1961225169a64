"""``camlens methods``: every registered method with its paper."""

from __future__ import annotations

from typer.testing import CliRunner

import camlens
from camlens.cli import app
from camlens.methods._registry import get


def test_methods_lists_the_registry():
    result = CliRunner().invoke(app, ["methods"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == camlens.methods()
    for line, name in zip(lines, camlens.methods()):
        assert line.endswith(get(name).paper)
    assert any("gradcam" in line and "Selvaraju" in line for line in lines)
