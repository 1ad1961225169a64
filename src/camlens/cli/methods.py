"""``camlens methods``: the registered methods and their papers."""

from __future__ import annotations

import typer

from camlens.cli import app


@app.command("methods")
def methods_command() -> None:
    """List the methods (names for --method) with their papers."""
    from camlens.methods._registry import get, methods

    names = methods()
    width = max(len(name) for name in names)
    for name in names:
        typer.echo(f"{name:<{width}}  {get(name).paper}")
