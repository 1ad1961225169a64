"""Start-up: ``import camlens`` and ``camlens --help`` load no torch, numpy or typer command
bodies' dependencies (the command line answers in well under 2 s); a public name loads its
module on first use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import camlens

HEAVY = ("torch", "numpy", "PIL", "pyarrow", "pandas", "matplotlib", "fastapi")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    source = str(Path(camlens.__file__).parents[1])  # this checkout's src, not an installed copy
    env = {**os.environ, "PYTHONPATH": source}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_import_camlens_and_help_load_no_heavy_library() -> None:
    code = (
        "import camlens, contextlib, io\n"
        "from camlens.cli import app\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    app(['--help'])\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    app(['explain', '--help'])"
    )
    assert _loaded_after(code) == []


def test_a_public_name_loads_its_module_on_first_use() -> None:
    assert camlens.GradCAM.__module__ == "camlens.methods.gradient"
    assert "GradCAM" in dir(camlens) and "load_run" in dir(camlens)
    assert camlens.methods()[:2] == ["cam", "gradcam"]
    assert camlens.layers.__module__ == "camlens.backends.survey"


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        camlens.GradCam  # noqa: B018
    except AttributeError as error:
        assert str(error) == "module 'camlens' has no attribute 'GradCam'"
    else:
        raise AssertionError("camlens.GradCam resolved")
