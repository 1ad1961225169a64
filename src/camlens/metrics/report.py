"""Running several metrics for several methods over batches, and writing the results.

:func:`evaluate` returns one :class:`MethodScores` per method; :func:`rank` orders them;
:func:`write_csv`, :func:`write_json`, :func:`plot_curves` and :func:`write_html` write what
``camlens evaluate`` leaves in its output folder (numpy and matplotlib only here, at the output).
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from camlens.errors import CamlensError, CamlensValueError
from camlens.methods._registry import explain, get, options_for
from camlens.metrics import faithfulness, localisation
from camlens.metrics.remove_and_debias import road as road_metric
from camlens.visualize.figures import new_figure

# name -> (label, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "deletion": ("Deletion AUC", False),
    "insertion": ("Insertion AUC", True),
    "average_drop": ("Average Drop", False),
    "increase": ("Increase in Confidence", True),
    "road_morf": ("ROAD MoRF", False),
    "road_lerf": ("ROAD LeRF", True),
    "pointing": ("Pointing game", True),
    "energy": ("Energy pointing game", True),
    "iou": ("CAM-box IoU", True),
    "loc_accuracy": ("Loc. accuracy (IoU>=0.5)", True),
    "loc_error": ("Top-1 loc. error", False),
}
FAITHFULNESS = ("deletion", "insertion", "average_drop", "increase")
LOCALISATION = ("pointing", "energy", "iou", "loc_accuracy", "loc_error")
DEFAULT = FAITHFULNESS + LOCALISATION
ROAD_PERCENTILES = (10, 30, 50, 70, 90)


@dataclass
class Settings:
    """How the metrics run (the defaults are ``camlens evaluate``'s)."""

    steps: int = 50
    baseline: str = "zero"
    batch_size: int = 32
    tolerance: float = 0.0
    threshold: float = 0.2
    road_percentiles: tuple[float, ...] = ROAD_PERCENTILES
    target: Any = None
    layer: Any = "auto"
    precision: str = "fp32"  # deletion/insertion's and Score-CAM's perturbed forwards
    progress: bool = False  # Score-CAM's own progress bar (camlens evaluate shows it)


@dataclass
class MethodScores:
    """Per-image values of each metric, the summed curves, and the error that stopped the
    method (it is then left out of the ranking)."""

    method: str
    values: dict[str, list[float]] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    curve_counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    def add(self, name: str, values: torch.Tensor) -> None:
        self.values.setdefault(name, []).extend(float(v) for v in values.reshape(-1))

    def add_curves(self, name: str, curves: torch.Tensor) -> None:
        total = curves.sum(dim=0).tolist()
        if name in self.curves:
            total = [a + b for a, b in zip(self.curves[name], total)]
        self.curves[name] = total
        self.curve_counts[name] = self.curve_counts.get(name, 0) + curves.shape[0]

    def mean_curve(self, name: str) -> list[float]:
        return [v / self.curve_counts[name] for v in self.curves[name]]

    def mean(self, name: str) -> float:
        """Mean over images, NaN values (no box for an image) left out."""
        values = [v for v in self.values.get(name, []) if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    def means(self) -> dict[str, float]:
        return {name: self.mean(name) for name in self.values}


Batch = tuple[torch.Tensor, Any, Any]  # (x, boxes or None, labels or None)


def evaluate(
    model: Any,
    batches: Iterable[Batch],
    methods: list[str],
    metrics: Iterable[str] = DEFAULT,
    settings: Settings | None = None,
    advance: Callable[[], None] | None = None,
) -> list[MethodScores]:
    """Explain every batch with every method and score the maps with ``metrics`` (names of
    :data:`METRICS`). A batch is ``(x, boxes, labels)``: boxes (one or several per image, in
    the input's pixels, or None: no localisation) and labels (true classes, for the top-1
    localisation error, or None). ``advance`` is called after each method and batch."""
    settings = settings or Settings()
    chosen = list(dict.fromkeys(metrics))
    unknown = [name for name in chosen if name not in METRICS]
    if unknown:
        raise CamlensValueError(
            f"unknown metric {unknown[0]!r}; valid metrics: {', '.join(METRICS)}"
        )
    names = [get(method).name for method in methods]
    scores = {name: MethodScores(name) for name in names}
    for x, boxes, labels in batches:
        for name in names:
            result = scores[name]
            if result.error is None:
                try:
                    _score_batch(model, x, boxes, labels, name, chosen, settings, result)
                except CamlensError as error:
                    result.error = str(error)
            if advance is not None:
                advance()
    return list(scores.values())


def _score_batch(
    model: Any,
    x: torch.Tensor,
    boxes: Any,
    labels: Any,
    method: str,
    chosen: list[str],
    settings: Settings,
    result: MethodScores,
) -> None:
    options = options_for(method, precision=settings.precision, progress=settings.progress)
    exp = explain(model, x, method=method, target=settings.target, layer=settings.layer, **options)
    common: dict[str, Any] = {
        "target": exp.targets if bool((exp.targets >= 0).all()) else settings.target,
        "batch_size": settings.batch_size,
    }
    for name, function, fill in (
        ("deletion", faithfulness.deletion, settings.baseline),
        ("insertion", faithfulness.insertion, "blur"),
    ):
        if name in chosen:
            aucs, curves = function(
                model,
                x,
                exp.maps,
                steps=settings.steps,
                baseline=fill,
                return_curves=True,
                precision=settings.precision,
                **common,
            )
            result.add(name, aucs)
            result.add_curves(name, curves)
    if "average_drop" in chosen:
        result.add("average_drop", faithfulness.average_drop(model, x, exp.maps, **common))
    if "increase" in chosen:
        result.add("increase", faithfulness.increase_in_confidence(model, x, exp.maps, **common))
    for order in ("morf", "lerf"):
        if f"road_{order}" in chosen:
            means, curves = road_metric(
                model,
                x,
                exp.maps,
                order=order,
                percentiles=settings.road_percentiles,
                return_curves=True,
                generator=torch.Generator().manual_seed(0),
                **common,
            )
            result.add(f"road_{order}", means)
            result.add_curves(f"road_{order}", curves)
    wanted = [name for name in LOCALISATION if name in chosen]
    if not wanted or boxes is None:
        return
    present = [i for i, group in enumerate(boxes) if group]
    nan = torch.full((x.shape[0],), math.nan)

    def spread(values: torch.Tensor) -> torch.Tensor:
        out = nan.clone()
        out[present] = values
        return out

    maps = exp.maps[present]
    kept = [boxes[i] for i in present]
    if "pointing" in chosen:
        result.add("pointing", spread(localisation.pointing_game(maps, kept, settings.tolerance)))
    if "energy" in chosen:
        result.add("energy", spread(localisation.energy_pointing_game(maps, kept)))
    overlaps = localisation.box_iou(maps, kept, settings.threshold)
    if "iou" in chosen:
        result.add("iou", spread(overlaps))
    if "loc_accuracy" in chosen:
        result.add("loc_accuracy", spread((overlaps >= 0.5).float()))
    if "loc_error" in chosen and labels is not None:
        truth = torch.as_tensor(labels).reshape(-1)[present]
        predicted = exp.targets[present]
        result.add("loc_error", spread(1.0 - ((predicted == truth) & (overlaps >= 0.5)).float()))


def rank_key(scores: MethodScores) -> tuple[str, float]:
    """What methods are ranked by: insertion - deletion when both ran, else the first metric
    (sign-flipped where lower is better)."""
    means = scores.means()
    if "insertion" in means and "deletion" in means:
        return "insertion - deletion", means["insertion"] - means["deletion"]
    for name, (_, higher) in METRICS.items():
        if name in means and not math.isnan(means[name]):
            return name, means[name] if higher else -means[name]
    return "", -math.inf


def rank(results: list[MethodScores]) -> list[MethodScores]:
    """Methods that ran, best first; the failed ones last."""
    ok = [r for r in results if r.error is None]
    ok.sort(key=lambda r: -rank_key(r)[1])
    return ok + [r for r in results if r.error is not None]


def columns(results: list[MethodScores]) -> list[str]:
    present = {name for r in results for name in r.values}
    return [name for name in METRICS if name in present]


def write_csv(results: list[MethodScores], path: Path) -> Path:
    """One row per method: rank, method, the mean of every metric, the error if any."""
    names = columns(results)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "method", *names, "images", "error"])
        for index, result in enumerate(rank(results), start=1):
            means = result.means()
            count = max((len(v) for v in result.values.values()), default=0)
            writer.writerow(
                [index if result.error is None else "", result.method]
                + [_number(means.get(name, math.nan)) for name in names]
                + [count, result.error or ""]
            )
    return path


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"


def write_json(results: list[MethodScores], path: Path, config: dict[str, Any]) -> Path:
    """Means, per-image values, mean curves and errors per method, with the run's config."""

    def clean(values: list[float]) -> list[float | None]:
        return [None if math.isnan(v) else v for v in values]

    document = {
        "config": config,
        "ranking": [r.method for r in rank(results) if r.error is None],
        "methods": {
            r.method: {
                "mean": {k: (None if math.isnan(v) else v) for k, v in r.means().items()},
                "per_image": {k: clean(v) for k, v in r.values.items()},
                "curves": {k: r.mean_curve(k) for k in r.curves},
                "error": r.error,
            }
            for r in results
        },
    }
    path.write_text(json.dumps(document, indent=2))
    return path


def plot_curves(
    results: list[MethodScores], folder: Path, percentiles: tuple[float, ...] = ROAD_PERCENTILES
) -> list[Path]:
    """One PNG per curve kind (deletion, insertion, ROAD): each method's mean curve."""
    written = []
    kinds = [
        k
        for k in ("deletion", "insertion", "road_morf", "road_lerf")
        if any(k in r.curves for r in results)
    ]
    for kind in kinds:
        figure = new_figure(6, 4.2)
        axis = figure.subplots()
        for result in rank(results):
            if kind not in result.curves:
                continue
            curve = result.mean_curve(kind)
            if kind.startswith("road"):
                xs = list(percentiles[: len(curve)])
            else:
                xs = [k / (len(curve) - 1) for k in range(len(curve))]
            area = result.mean(kind)
            axis.plot(xs, curve, label=f"{result.method} ({area:.3f})")
        label = METRICS[kind][0]
        axis.set_title(f"{label} (mean over images)")
        axis.set_xlabel(
            "percent of pixels removed" if kind.startswith("road") else "fraction of pixels"
        )
        axis.set_ylabel("probability of the explained class")
        axis.legend(fontsize=7)
        figure.tight_layout()
        path = folder / f"{kind}.png"
        figure.savefig(path, dpi=100)
        written.append(path)
    return written


def write_html(
    results: list[MethodScores], path: Path, images: list[Path], config: dict[str, Any]
) -> Path:
    """A self-contained page (pictures linked next to it): the ranked table and the curves."""
    names = columns(results)
    head = "".join(
        f"<th>{html.escape(METRICS[n][0])} {'&uarr;' if METRICS[n][1] else '&darr;'}</th>"
        for n in names
    )
    rows = []
    for index, result in enumerate(rank(results), start=1):
        means = result.means()
        cells = "".join(f"<td>{_number(means.get(n, math.nan))}</td>" for n in names)
        if result.error is not None:
            cells = f"<td colspan='{len(names)}'>skipped: {html.escape(result.error)}</td>"
        place = index if result.error is None else ""
        rows.append(f"<tr><td>{place}</td><td>{html.escape(result.method)}</td>{cells}</tr>")
    pictures = "".join(
        f"<figure><img src='{html.escape(p.name)}' alt='{html.escape(p.stem)}'></figure>"
        for p in images
    )
    settings = "".join(
        f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in config.items()
    )
    key = rank_key(rank(results)[0])[0] if results else ""
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>camlens evaluate</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:nth-child(2){{text-align:left}}
figure{{display:inline-block;margin:0 1em 1em 0}}img{{max-width:600px}}</style></head>
<body><h1>camlens evaluate</h1>
<p>Methods ranked by {html.escape(key)}; &uarr; higher is better, &darr; lower is better.
Means over images (localisation over the images that have boxes).</p>
<table><tr><th>rank</th><th>method</th>{head}</tr>{"".join(rows)}</table>
<h2>Curves</h2>{pictures}
<h2>Settings</h2><ul>{settings}</ul></body></html>
"""
    path.write_text(page)
    return path
