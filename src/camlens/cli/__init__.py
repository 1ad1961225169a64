"""The ``camlens`` command line: one typer app, one module per command."""

from __future__ import annotations

import importlib
from typing import NoReturn

import typer

app = typer.Typer(
    name="camlens",
    help="Show where an image classifier looks: class activation maps and their relatives.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def usage_error(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code`` (2: nothing was done)."""
    from camlens.cli.errors import fail

    fail(message, code)


#: Command modules, each registering its command on ``app`` when imported.
COMMANDS = ("explain", "layers", "methods", "train", "evaluate", "demo", "serve")

for _name in COMMANDS:
    importlib.import_module(f"camlens.cli.{_name}")


def main() -> None:
    """Entry point of the console script."""
    app()
