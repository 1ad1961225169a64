"""One batch of a run: explained on the model's device, then rendered into rows and files.

:func:`explain_batch` is the only step that needs the model; it returns plain CPU data
(:class:`Explained`). :func:`render` turns that into :class:`Record` s: one row per image and
method (the columns of ``results.parquet``) and the encoded files that go with it (the map as an
8-bit grayscale PNG, the overlay, optionally the panel and a copy of the input). Both engines (the
local one and Ray's) call these two functions, so a run's rows and files are the same whichever
engine wrote them.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from camlens.images.decode import Failure
from camlens.runs.row import Row, number, path_text
from camlens.runs.session import LABEL, Session
from camlens.visualize.boxes import boxes as find_boxes
from camlens.visualize.boxes import scale_box
from camlens.visualize.render import (
    draw_boxes,
    draw_contours,
    draw_label,
    label_text,
    overlay,
    panel_png,
)

#: Overlay encodings: file suffix -> Pillow format and save options.
OVERLAY_FORMATS = {
    "jpg": ("JPEG", {"quality": 85}),
    "webp": ("WEBP", {"quality": 80, "method": 3}),
    "png": ("PNG", {"compress_level": 1}),
}


@dataclass(frozen=True)
class RenderOptions:
    """How rows are drawn: colormap, opacity, threshold, the CAM paper's boxes, contours, overlay
    format, the opt-in panel figure and copy of the input."""

    colormap: str = "jet"
    alpha: float = 0.5
    threshold: float | None = None
    boxes: bool = False
    box_threshold: float = 0.2
    contours: tuple[float, ...] = ()
    overlay_format: str = "jpg"
    panel: bool = False
    copy_images: bool = False


@dataclass
class Explained:
    """A batch's explanations on the CPU: per method the maps (B, S, S) in [0, 1], targets,
    probabilities and scores; the prediction; true labels where known (-1 otherwise)."""

    paths: list[Path]
    images: list[np.ndarray]
    methods: list[str]
    layers: dict[str, str]
    maps: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    probs: dict[str, torch.Tensor]
    scores: dict[str, torch.Tensor]
    predicted: torch.Tensor
    probability: torch.Tensor
    true_labels: torch.Tensor
    true_names: list[str | None]
    seconds: dict[str, float]
    load_s: float = 0.0
    boxes: dict[str, list[list[tuple[int, int, int, int]]]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)  # images left out, with the reason
    precisions: dict[str, str] = field(default_factory=dict)  # the precision each method ran in
    #: per method, the image of each map (``Explanation.index``): several targets per image
    index: dict[str, torch.Tensor] = field(default_factory=dict)
    #: several targets per image ("topK", "above:P"): the class goes into the file names
    several: bool = False
    #: an output value ("output:K") of a model that is not a classifier: no class, no probability
    output: bool = False

    def rows_of(self, method: str, image: int) -> list[int]:
        """The rows of ``method`` (its maps, targets...) that explain image ``image``."""
        index = self.index.get(method)
        return [image] if index is None else (index == image).nonzero()[:, 0].tolist()

    def keep(self, kept: Sequence[int]) -> None:
        """Keep only the images at indices ``kept`` (in place)."""
        index = torch.tensor(list(kept), dtype=torch.int64)
        self.paths = [self.paths[i] for i in kept]
        self.images = [self.images[i] for i in kept]
        self.true_names = [self.true_names[i] for i in kept]
        for method in self.methods:
            owners = self.index.get(method, torch.arange(len(self.predicted)))
            rows = torch.isin(owners, index).nonzero()[:, 0]
            for per_method in (self.maps, self.targets, self.probs, self.scores):
                if method in per_method:
                    per_method[method] = per_method[method][rows]
            if method in self.boxes:
                self.boxes[method] = [self.boxes[method][int(r)] for r in rows]
            if method in self.index:  # renumbered: the kept images' new positions
                self.index[method] = torch.searchsorted(index, owners[rows])
        self.predicted, self.probability = self.predicted[index], self.probability[index]
        self.true_labels = self.true_labels[index]


#: Why an image whose maps are not finite is a failure row (the library warns and gives NaN maps).
NOT_FINITE = "the model's output is NaN or inf for this image: nothing to explain"


@dataclass
class Record:
    """One image and method: its ``row`` and ``files`` (relative path -> bytes) to write."""

    row: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)


def explain_batch(
    session: Session,
    unit: torch.Tensor,
    paths: list[Path],
    images: list[np.ndarray],
    methods: Sequence[str],
    *,
    target: int | str | None = None,
    layer: Any = "auto",
    precision: str = "auto",
    true_labels: Sequence[int] | None = None,
    true_names: Sequence[str | None] | None = None,
    load_s: float = 0.0,
    box_threshold: float | None = None,
    activation: str | None = None,
) -> Explained:
    """Explain the [0, 1] batch ``unit`` with every method. ``target``: None (the predicted
    class), a class index, or ``"label"`` (each image's true class, the prediction where it is
    unknown). ``true_labels`` are class indices (-1: unknown), ``true_names`` their folder names.
    With ``box_threshold``, each map's CAM-paper box (largest region at or above that fraction of
    its maximum) is found for the whole batch at once, in the map's pixels. Several targets per
    image ("topK", "above:P") give several maps per image (``Explained.index``), "output:K" one
    output value per image; ``activation`` is how probabilities are read (:mod:`camlens.targets`).
    """
    x = session.native(unit)
    truth = torch.tensor(
        list(true_labels) if true_labels is not None else [-1] * len(paths), dtype=torch.int64
    )
    predicted, probability = None, None
    if target == LABEL or target is not None:
        predicted, probability = session.predict(x)
    if target == LABEL:
        assert predicted is not None
        wanted: Any = torch.where(truth >= 0, truth, predicted).tolist()
    else:
        wanted = target
    out = Explained(
        paths, images, list(methods), {}, {}, {}, {}, {},
        torch.empty(0), torch.empty(0), truth,
        list(true_names) if true_names is not None else [None] * len(paths), {}, load_s,
        several=isinstance(target, str) and target.startswith(("top", "above:")),
        output=isinstance(target, str) and target.startswith("output:"),
    )  # fmt: skip
    count = max(len(paths), 1)
    for method in methods:
        begin = time.perf_counter()
        exp = session.explainer(method, layer, precision)(x, target=wanted, activation=activation)
        out.seconds[method] = (time.perf_counter() - begin) / count
        out.layers[method] = exp.layer
        out.precisions[method] = exp.extra.get("precision", "fp32")
        if out.several:
            out.index[method] = exp.index.cpu()
        out.maps[method] = exp.maps.float().cpu()
        out.targets[method] = exp.targets.cpu()
        out.probs[method] = exp.probs.float().cpu()
        out.scores[method] = exp.scores.float().cpu()
        if box_threshold is not None:
            out.boxes[method] = cast(list, find_boxes(out.maps[method], box_threshold))
        if predicted is None:  # the predicted class was explained: no second forward
            predicted, probability = exp.targets.cpu(), exp.probs.float().cpu()
    assert predicted is not None and probability is not None
    out.predicted, out.probability = predicted, probability
    finite = torch.ones(len(paths), dtype=torch.bool)
    for method, maps in out.maps.items():
        owners = out.index.get(method, torch.arange(len(paths)))
        finite[owners[~torch.isfinite(maps.flatten(1)).all(1)]] = False
    if not finite.all():
        out.failures = [Failure(path_text(p), NOT_FINITE) for p, ok in zip(paths, finite) if not ok]
        out.keep(finite.nonzero().flatten().tolist())
    return out


def encode(picture: np.ndarray, fmt: str) -> bytes:
    """An overlay (uint8 RGB) encoded as ``fmt`` (:data:`OVERLAY_FORMATS`)."""
    from PIL import Image

    name, options = OVERLAY_FORMATS[fmt]
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format=name, **options)
    return buffer.getvalue()


def map_png(heat: np.ndarray) -> bytes:
    """A map in [0, 1] as an 8-bit grayscale PNG (``round(255 * value)``)."""
    from PIL import Image

    values = (np.clip(heat, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(values, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def render(
    explained: Explained, stems: Sequence[str], session: Session, options: RenderOptions
) -> list[Record]:
    """Rows and files for every image, method and target of ``explained`` (``stems`` name the
    files; with several targets per image, ``{stem}_{method}_{class}``)."""
    records: list[Record] = []
    for i, (path, image, stem) in enumerate(zip(explained.paths, explained.images, stems)):
        copied = f"images/{stem}{path.suffix.lower() or '.jpg'}" if options.copy_images else None
        mine: list[Record] = []
        panel_rows = []
        for method in explained.methods:
            for r in explained.rows_of(method, i):
                record, heat, picture = _record(explained, i, method, r, stem, session, options)
                record.row.update(image=copied)
                panel_rows.append((method, heat, picture))
                mine.append(record)
        if not mine:
            continue
        if options.panel:
            predicted = int(explained.predicted[i])
            best = label_text(session.name(predicted), float(explained.probability[i]))
            title = f"{path_text(path.name)}: {best}"
            mine[0].files[f"panels/{stem}.png"] = panel_png(
                image, panel_rows, title, options.colormap
            )
        if copied is not None:
            mine[0].files[copied] = path.read_bytes()
        records.extend(mine)
    return records


def _record(
    explained: Explained,
    i: int,
    method: str,
    r: int,
    stem: str,
    session: Session,
    options: RenderOptions,
) -> tuple[Record, np.ndarray, np.ndarray]:
    """The row and files of map ``r`` of ``method`` (image ``i``), its map and overlay."""
    begin = time.perf_counter()
    path, image, fmt = explained.paths[i], explained.images[i], options.overlay_format
    height, width = image.shape[:2]
    predicted = None if explained.output else int(explained.predicted[i])
    truth = int(explained.true_labels[i])
    heat = explained.maps[method][r].numpy()  # numpy from here: no torch threads
    target = int(explained.targets[method][r])
    prob = float(explained.probs[method][r])
    picture = overlay(image, heat, options.colormap, options.alpha, options.threshold)
    in_map = explained.boxes[method][r] if method in explained.boxes else []
    found = [scale_box(box, heat.shape, (height, width)) for box in in_map]
    if found:
        picture = draw_boxes(picture, found)
    if options.contours:
        picture = draw_contours(picture, heat, options.contours)
    name = f"output {target}" if explained.output else session.name(target)
    picture = draw_label(picture, label_text(name, prob))
    base = f"{stem}_{method}_{target}" if explained.several else f"{stem}_{method}"
    files = {f"maps/{base}.png": map_png(heat), f"overlays/{base}.{fmt}": encode(picture, fmt)}
    row = Row(
        path=path_text(path),
        stem=stem,
        width=width,
        height=height,
        method=method,
        layer=explained.layers[method],
        predicted=predicted,
        predicted_name=None if predicted is None else session.name(predicted),
        probability=None if explained.output else number(float(explained.probability[i])),
        target=target,
        target_name=session.name(target) if target >= 0 and not explained.output else None,
        target_probability=number(prob),
        score=number(float(explained.scores[method][r])),
        true_label=truth if truth >= 0 else None,
        true_name=explained.true_names[i],
        correct=(predicted == truth) if truth >= 0 and predicted is not None else None,
        boxes=[[int(v) for v in box] for box in found],
        map=f"maps/{base}.png",
        overlay=f"overlays/{base}.{fmt}",
        panel=f"panels/{stem}.png" if options.panel else None,
        load_s=round(explained.load_s / max(len(explained.paths), 1), 4),
        explain_s=round(explained.seconds[method], 4),
        render_s=round(time.perf_counter() - begin, 4),
        precision=explained.precisions.get(method),
    )
    return Record(row.as_dict(), files), heat, picture
