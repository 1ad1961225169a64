"""README's Quick start is what CI runs, and its main job works."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


#: What CI checks between the README's install and its pytest (the test extra installs them).
CHECKS = ["ruff check src tests", "ruff format --check src tests", "mypy src"]


def test_quick_start_has_two_commands_and_ci_runs_the_test_one():
    commands = quick_start_commands()
    assert len(commands) == 2
    install, test = commands[1].split(" && ")
    assert install == 'pip install -e ".[test]"' and test == "pytest"
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    start = lines.index(install)
    assert lines[start : start + len(CHECKS) + 2] == [install, *CHECKS, test]


def test_main_job_runs(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from camlens.cli import app

    install, job = quick_start_commands()[0].split(" && ", 1)
    assert install.startswith("pip install")
    args = shlex.split(job)
    assert args[0] == "camlens"
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    args = [str(out) if a == args[args.index("--out") + 1] else a for a in args[1:]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.rglob("*.png"))
    assert (out / "report.html").is_file()
    import camlens

    for method in camlens.methods(camlens.load_model("demo")):  # every method that applies
        assert f"│ {method} " in result.output
