"""MkDocs hooks: the command-line page is generated from the typer app when the site is built,
and MathJax is copied into the site from the ``django-static-mathjax`` package (a plain copy of
MathJax 3, no Django needed), so formulas render without any network; ``docs/changelog.md`` is
CHANGELOG.md with its ``docs/`` links made relative.

``docs/cli.md`` holds the prose; the line ``<!-- camlens-cli -->`` is replaced by one section per
command (usage, help, every argument and option), so a new command or option is on the site the
day it is added. ``tests/docs/test_site.py`` checks the built page against ``camlens --help``.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

MARKER = "<!-- camlens-cli -->"
CHANGELOG = "<!-- CHANGELOG.md -->"
ROOT = Path(__file__).resolve().parents[1]


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def command_reference() -> str:
    """Markdown: one section per ``camlens`` command, its arguments and options in a table (the
    names, types, help and defaults that ``camlens COMMAND --help`` prints)."""
    import typer.main

    sys.path.insert(0, str(ROOT / "src"))
    from camlens.cli import app

    group = typer.main.get_command(app)
    parts = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        context = command.context_class(command, info_name=name)
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        pieces = [f"camlens {name}", "[OPTIONS]"]
        for argument in arguments:
            text = argument.name.upper() + ("..." if argument.nargs == -1 else "")
            pieces.append(text if argument.required else f"[{text}]")
        rows = []
        for param in command.params:
            record = param.get_help_record(context)
            if record is not None:
                rows.append(f"| `{_cell(record[0])}` | {_cell(record[1])} |")
        parts.append(
            f"### camlens {name}\n\n{(command.help or '').strip()}\n\n"
            f"```text\n{' '.join(pieces)}\n```\n\n"
            "| argument / option | meaning |\n|---|---|\n" + "\n".join(rows)
        )
    return "\n\n".join(parts) + "\n"


def changelog() -> str:
    """CHANGELOG.md with its links to ``docs/...`` made relative to the site's pages."""
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    return text.replace("](docs/", "](")


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, command_reference())
    if CHANGELOG in markdown:
        markdown = markdown.replace(CHANGELOG, changelog())
    return markdown


def mathjax_folder() -> Path:
    """MathJax's ``es5`` folder inside the installed ``django-static-mathjax`` package."""
    spec = importlib.util.find_spec("mathjax")
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "static" / "mathjax" / "es5"
        if (folder / "tex-chtml.js").is_file():
            return folder
    raise RuntimeError(
        "MathJax not found: pip install django-static-mathjax (in camlens's docs extra)"
    )


def on_post_build(config: Any, **kwargs: Any) -> None:
    source = mathjax_folder()
    target = Path(config["site_dir"]) / "assets" / "mathjax"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "tex-chtml.js", target / "tex-chtml.js")
    fonts = source / "output" / "chtml" / "fonts" / "woff-v2"
    shutil.copytree(fonts, target / "output" / "chtml" / "fonts" / "woff-v2", dirs_exist_ok=True)
