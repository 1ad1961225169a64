"""The ``camlens`` command line: one typer app, one module per command."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="camlens",
    help="Show where an image classifier looks: class activation maps and their relatives.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from camlens.cli import evaluate as _evaluate  # noqa: E402,F401  (registers the command)
from camlens.cli import explain as _explain  # noqa: E402,F401  (registers the command)


def main() -> None:
    """Entry point of the console script."""
    app()
