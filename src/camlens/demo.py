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
    progress: bool = True,
) -> tuple[list[MethodScore], Any]:
    """Explain the bundled samples with ``methods`` (default: every registered one) into ``out``.

    Returns the per-method scores (in ``methods`` order) and the run's summary.
    """
    import camlens
    from camlens import metrics
    from camlens.checkpoint import demo_path, load_model
    from camlens.datasets import read_boxes
    from camlens.runner import Options, run

    chosen = list(methods) if methods else camlens.methods()
    model = load_model("demo")
    paths, _, truth = read_boxes(demo_path() / "samples" / "boxes.csv")
    box_of = {path.resolve(): box for path, box in zip(paths, truth.tolist())}
    hits: dict[str, list[torch.Tensor]] = {name: [] for name in chosen}
    ious: dict[str, list[torch.Tensor]] = {name: [] for name in chosen}

    def score(batch_paths: list[Path], exp: Any) -> None:
        boxes = [box_of[Path(p).resolve()] for p in batch_paths]
        hits[exp.method].append(metrics.pointing_game(exp.maps, boxes))
        ious[exp.method].append(metrics.box_iou(exp.maps, boxes))

    options = Options(
        methods=chosen,
        boxes=True,
        batch_size=len(paths),
        size=model.input_size[0],
        normalize=False,
    )
    summary = run(
        model,
        paths,
        out,
        options,
        model.labels,
        echo=echo,
        progress=progress,
        title="camlens demo: the bundled cluttered-digit model",
        on_explained=score,
    )
    import json

    seconds: dict[str, float] = {name: 0.0 for name in chosen}
    for line in (out / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        seconds[record["method"]] += record["seconds"]["explain"]
    return [
        MethodScore(
            name,
            float(torch.cat(hits[name]).float().mean()) if hits[name] else float("nan"),
            float(torch.cat(ious[name]).float().mean()) if ious[name] else float("nan"),
            seconds[name],
        )
        for name in chosen
    ], summary
