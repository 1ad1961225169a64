"""``camlens demo``: the bundled cluttered-digit model on its 16 bundled samples, every method.

Writes what ``camlens explain`` writes (overlays with boxes, panels, ``results.jsonl``,
``report.html``) and scores each method's maps against the samples' ground-truth boxes: the
pointing-game hit rate (the map's maximum inside the box) and the mean IoU of the CAM paper's box
(largest region above 20% of the maximum) with the ground truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from camlens import metrics
from camlens.datasets import read_boxes
from camlens.methods._registry import methods as method_names
from camlens.models.checkpoint import demo_path, load_model
from camlens.runs.local import RunSettings, explain_files
from camlens.runs.records import RenderOptions
from camlens.runs.session import Session


@dataclass
class MethodScore:
    """A method's localisation on the demo samples."""

    method: str
    pointing_game: float
    box_iou: float
    seconds: float


def run_demo(
    out: Path,
    methods: Sequence[str] | None = None,
    echo: Callable[[str], None] = print,
    total: Callable[[int], None] | None = None,
    advance: Callable[[int], None] | None = None,
) -> tuple[list[MethodScore], Any]:
    """Explain the bundled samples with ``methods`` (default: every registered one) into ``out``.

    Returns the per-method scores (in ``methods`` order; seconds per image) and the run's
    summary. ``total`` and ``advance`` follow the progress as in
    :func:`camlens.runs.local.explain_files`.
    """
    session = Session.from_model(load_model("demo"), spec="demo")
    known = len(session.notes)
    chosen = session.usable(list(methods) if methods else method_names())
    for note in session.notes[known:]:
        echo(note)
    paths, _, truth = read_boxes(demo_path() / "samples" / "boxes.csv")
    box_of = {path.resolve(): box for path, box in zip(paths, truth.tolist())}
    hits: dict[str, list[torch.Tensor]] = {name: [] for name in chosen}
    ious: dict[str, list[torch.Tensor]] = {name: [] for name in chosen}
    seconds: dict[str, float] = {name: 0.0 for name in chosen}

    def score(explained: Any) -> None:
        boxes = [box_of[Path(p).resolve()] for p in explained.paths]
        for method in explained.methods:
            hits[method].append(metrics.pointing_game(explained.maps[method], boxes))
            ious[method].append(metrics.box_iou(explained.maps[method], boxes))
            seconds[method] += explained.seconds[method] * len(explained.paths)

    settings = RunSettings(
        methods=chosen,
        batch_size=len(paths),
        render=RenderOptions(boxes=True, overlay_format="png", panel=True, copy_images=True),
        overwrite=True,  # running the demo again replaces its earlier run
    )
    summary = explain_files(
        session,
        paths,
        out,
        settings,
        echo=echo,
        total=total,
        advance=advance,
        title="camlens demo: the bundled cluttered-digit model",
        on_explained=score,
    )
    return [
        MethodScore(
            name,
            float(torch.cat(hits[name]).float().mean()) if hits[name] else float("nan"),
            float(torch.cat(ious[name]).float().mean()) if ious[name] else float("nan"),
            seconds[name] / max(sum(len(h) for h in hits[name]), 1),
        )
        for name in chosen
    ], summary
