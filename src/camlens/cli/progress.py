"""A progress bar for long commands (rich, on stderr), with images per second and an ETA."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def progress_bar(
    label: str, enabled: bool = True
) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """Yields ``(total, advance)``: ``total(n)`` sets the number of items, ``advance(k)`` counts
    ``k`` more done. Disabled, both do nothing."""
    if not enabled:
        yield (lambda n: None), (lambda k: None)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Speed(ProgressColumn):
        def render(self, task: Any) -> Text:
            elapsed = task.finished_time or task.elapsed
            if not elapsed or not task.completed:
                return Text("")
            return Text(f"{task.completed / elapsed:.2f} images/s")

    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        Speed(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task = bar.add_task(label, total=None)
    with bar:
        yield (
            lambda n: bar.update(task, total=n),
            lambda k: bar.update(task, advance=k),
        )
