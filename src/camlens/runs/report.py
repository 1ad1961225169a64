"""``report.html``: a static report of a run folder that opens fast at 50,000 rows.

The page is a fixed shell (summary, controls, an empty grid) plus ``report-data.js``, the run's
rows in columns with repeated strings stored once. The browser draws one page of thumbnails at a
time (lazy-loaded images), so the number of rows costs memory for their text only. The summary:
images, methods, accuracy where true labels are known, predictions per class, a confidence
histogram and the failures. Filters: method, predicted class, true class, mistakes only,
confidence range; sort by confidence or name. The page is one static folder: no server, no
network. Nothing from the data is parsed as HTML: the shell is escaped Python output and the
script inserts text with ``textContent`` and links percent-encoded in Python. The page's CSS and
script are the files of ``report_static/``, inlined at write time: the page opens from disk.
"""

from __future__ import annotations

import functools
import html
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from camlens.runs.durable import write_bytes
from camlens.runs.row import REPORT_COLUMNS
from camlens.runs.store import is_uri


@functools.cache
def _static_text(name: str) -> str:
    """A file of ``report_static/`` (the page's CSS and script), inlined into every page."""
    return (resources.files("camlens.runs") / "report_static" / name).read_text(encoding="utf-8")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _link(out: Path, row: Any, absolute: bool = False) -> str:
    """A percent-encoded link from the report to the row's image: its copy in the run folder if
    any; else an input URI as it is (``s3://...``), or a local input relative to ``out`` (an
    absolute ``file://`` link with ``absolute``: a report that lives in an object store)."""
    copy, path = row.get("image"), str(row["path"])
    if isinstance(copy, str) and copy:
        return quote(copy.replace(os.sep, "/"), safe="/")
    if is_uri(path):
        return quote(path, safe="/:")
    if absolute:
        return Path(os.path.abspath(path)).as_uri()
    return quote(os.path.relpath(path, out).replace(os.sep, "/"), safe="/")


def run_data(out: Path, rows: Any, absolute: bool = False) -> dict[str, Any]:
    """The explained rows as columns for the page: strings as indices into one table (image
    links as :func:`_link` makes them)."""
    explained = rows[rows["error"].isna()]
    table: dict[str, int] = {}
    columns: dict[str, list[Any]] = {c: [] for c in REPORT_COLUMNS}

    def index(value: Any) -> int:
        if value is None or (isinstance(value, float) and value != value):
            return -1
        return table.setdefault(str(value), len(table))

    for row in explained.to_dict("records"):
        row["name"] = Path(row["path"]).name
        row["image"] = _link(out, row, absolute)
        row["overlay"] = quote(str(row["overlay"]), safe="/")
        for column in REPORT_COLUMNS:
            columns[column].append(index(row.get(column)))
    correct = explained["correct"].astype("Int64").fillna(-1)
    return {
        **columns,
        "strings": list(table),
        "probability": [round(float(v), 4) for v in explained["probability"]],
        "correct": [int(v) for v in correct],
    }


def _summary(rows: Any, info: dict[str, Any]) -> str:
    explained = rows[rows["error"].isna()]
    images = explained.drop_duplicates("path")
    stats = [("images", f"{len(images):,}"), ("methods", ", ".join(info.get("methods", [])))]
    known = images[images["correct"].notna()]
    if len(known):
        accuracy = known["correct"].astype(bool).mean()
        stats.append(("accuracy", f"{accuracy * 100:.1f}% of {len(known):,}"))
    failures = int(rows["error"].notna().sum())
    stats.append(("failed inputs", f"{failures:,}"))
    boxes = "".join(f'<div class="stat">{_e(k)}<b>{_e(v)}</b></div>' for k, v in stats)
    counts = images["predicted_name"].value_counts().head(15)
    top = max(int(counts.max()), 1) if len(counts) else 1
    lines = "".join(
        f"<tr><td>{_e(name)}</td><td>{int(count)}</td><td>"
        f'<div class="bar" style="width:{int(120 * count / top)}px"></div></td></tr>'
        for name, count in counts.items()
    )
    classes = (
        '<div class="chart"><h2>Predictions per class (top 15)</h2>'
        f'<table class="classes">{lines}</table></div>'
    )
    histogram = [0] * 10
    for value in images["probability"].dropna():
        histogram[min(int(float(value) * 10), 9)] += 1
    high = max(max(histogram), 1)
    bars = "".join(
        f'<div title="{i * 10}-{i * 10 + 10}%: {c}" style="height:{int(80 * c / high)}px"></div>'
        for i, c in enumerate(histogram)
    )
    confidence = (
        '<div class="chart"><h2>Confidence of the prediction (0 to 100%)</h2>'
        f'<div class="bars">{bars}</div></div>'
    )
    return f'<section class="summary">{boxes}{classes}{confidence}</section>'


def render_html(rows: Any, info: dict[str, Any], title: str = "camlens report") -> str:
    """The report page's shell for a run's rows (a DataFrame) and its manifest."""
    failed = rows[rows["error"].notna()]
    failures = ""
    if len(failed):
        items = "".join(
            f"<li><code>{_e(path)}</code>: {_e(reason)}</li>"
            for path, reason in zip(failed["path"], failed["error"])
        )
        failures = (
            f'<section class="failures"><h2>{len(failed)} input(s) skipped</h2>'
            f"<ul>{items}</ul></section>"
        )
    controls = (
        '<div class="controls">'
        '<label>Method <select id="method"><option value="">all</option></select></label>'
        '<label>Predicted <select id="predicted"><option value="">all</option></select></label>'
        '<label>True class <select id="truth"><option value="">all</option></select></label>'
        '<label><input type="checkbox" id="wrong"> mistakes only</label>'
        '<label>Confidence <input id="lo" type="number" min="0" max="100" value="0" size="3">'
        ' to <input id="hi" type="number" min="0" max="100" value="100" size="3"> %</label>'
        '<label>Sort <select id="sort"><option value="desc">confidence, high to low</option>'
        '<option value="asc">confidence, low to high</option>'
        '<option value="name">file name</option></select></label>'
        '<span id="count"></span></div>'
    )
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_static_text('report.css')}</style></head><body>"
        f"<header><h1>{_e(title)}</h1></header>"
        f"{_summary(rows, info)}{failures}{controls}"
        '<main class="grid" id="grid"></main>'
        '<nav class="pager"><button id="prev" type="button">previous</button>'
        '<span id="page"></span><button id="next" type="button">next</button></nav>'
        '<script src="report-data.js"></script>'
        f"<script>{_static_text('report.js')}</script></body></html>\n"
    )


def write_report(
    out: Path,
    rows: Any,
    info: dict[str, Any],
    title: str = "camlens report",
    absolute: bool = False,
) -> Path:
    """Write ``out/report.html`` and ``out/report-data.js``; returns the page's path
    (``absolute``: link local inputs by absolute ``file://`` links, for a report uploaded to an
    object store)."""
    out = Path(out)
    data = json.dumps(run_data(out, rows, absolute), separators=(",", ":")).replace("</", "<\\/")
    write_bytes(out / "report-data.js", f"window.CAMLENS_RUN={data};\n".encode())
    file = out / "report.html"
    write_bytes(file, render_html(rows, info, title).encode())
    return file
