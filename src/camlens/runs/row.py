"""The run row, defined once: one per image and method of a run (one per detection for
``--task detect``), or one per input that failed (``method`` null, ``error`` the reason).

:class:`Row` names the columns, their Python types and their Arrow types, in the order of
``results.parquet``; :func:`schema`, :data:`COLUMNS`, the failure row, the frame ``load_run``
reads and the bytes of ``results.jsonl``/``.csv`` all come from it. The engines build rows with
:class:`Row`, the writer stores them, :mod:`camlens.runs.folder` reads them back, and the report
and ``camlens serve`` take the columns they show from here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import Any

#: Arrow types by name (built on demand: pyarrow is imported when a run is written or read).
TEXT, INT32, INT64, FLOAT, BOOL, BOXES = "string", "int32", "int64", "float64", "bool", "boxes"


def _column(arrow: str) -> Any:
    return field(default=None, metadata={"arrow": arrow})


@dataclass
class Row:
    """One row of a run, every column null unless set (a failure row sets ``path`` and
    ``error`` only). Boxes are ``[[x0, y0, x1, y1], ...]`` in the image's pixels; ``map``,
    ``overlay``, ``panel`` and ``image`` name files inside the run folder; ``*_s`` are seconds
    per image; ``precision`` is the one the method ran in (``exp.extra["precision"]``: "fp32",
    "bf16", "int8"...)."""

    path: str | None = _column(TEXT)
    stem: str | None = _column(TEXT)
    width: int | None = _column(INT32)
    height: int | None = _column(INT32)
    method: str | None = _column(TEXT)
    layer: str | None = _column(TEXT)
    predicted: int | None = _column(INT64)
    predicted_name: str | None = _column(TEXT)
    probability: float | None = _column(FLOAT)
    target: int | None = _column(INT64)
    target_name: str | None = _column(TEXT)
    target_probability: float | None = _column(FLOAT)
    score: float | None = _column(FLOAT)
    true_label: int | None = _column(INT64)
    true_name: str | None = _column(TEXT)
    correct: bool | None = _column(BOOL)
    boxes: list[list[int]] | None = _column(BOXES)
    map: str | None = _column(TEXT)
    overlay: str | None = _column(TEXT)
    panel: str | None = _column(TEXT)
    image: str | None = _column(TEXT)
    load_s: float | None = _column(FLOAT)
    explain_s: float | None = _column(FLOAT)
    render_s: float | None = _column(FLOAT)
    precision: str | None = _column(TEXT)
    error: str | None = _column(TEXT)

    def as_dict(self) -> dict[str, Any]:
        """The row as a record's ``row``: column -> value, in :data:`COLUMNS` order."""
        return {name: getattr(self, name) for name in COLUMNS}


#: The columns of ``results.parquet``, ``.jsonl`` and ``.csv``, in order.
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Row))
#: The columns ``camlens serve`` sends for a row of a run page, in their JSON order.
PAGE_COLUMNS = (
    "path", "stem", "method", "layer", "predicted", "predicted_name", "probability", "target",
    "target_name", "target_probability", "true_label", "true_name", "correct", "width", "height",
    "map", "overlay", "panel", "image",
    "score",
)  # fmt: skip
#: The text columns of the report's page (``name``: the file name of ``path``).
REPORT_COLUMNS = ("path", "name", "image", "overlay", "method", "layer", "predicted_name",
                  "target_name", "true_name")  # fmt: skip


def schema() -> Any:
    """The Arrow schema of ``results.parquet`` (explicit, so that parts with nulls agree)."""
    import pyarrow as pa

    types = {
        TEXT: pa.string(),
        INT32: pa.int32(),
        INT64: pa.int64(),
        FLOAT: pa.float64(),
        BOOL: pa.bool_(),
        BOXES: pa.list_(pa.list_(pa.int32())),
    }
    return pa.schema([(f.name, types[f.metadata["arrow"]]) for f in fields(Row)])


def path_text(path: str | os.PathLike) -> str:
    """A path as the text a row stores: itself, except that the bytes of a file name that is not
    UTF-8 (``os.fsdecode``'s surrogate escapes, which Parquet and JSON cannot hold) become
    backslash escapes (``caf\\xe9.png``), so every name is stored and matched alike."""
    text = os.fspath(path) if not isinstance(path, str) else path
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def number(value: float) -> float | None:
    """A probability or score as a row stores it: rounded to 6 decimals, NaN as null."""
    return None if value != value else round(float(value), 6)


def failure_row(path: str, reason: str) -> dict[str, Any]:
    """The row of an input that could not be explained: ``method`` None, ``error`` the reason."""
    return Row(path=path_text(path), error=path_text(reason)).as_dict()


def table(rows: list[dict[str, Any]]) -> Any:
    """Rows (``row`` dicts, missing columns null) as an Arrow table of :func:`schema`."""
    import pyarrow as pa

    return pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema())


def frame(tables: list[Any]) -> Any:
    """Arrow tables of :func:`schema` (none: no row) as one pandas DataFrame in which integers
    and booleans stay what they are beside the nulls of failure rows."""
    import pandas as pd
    import pyarrow as pa

    nullable = {
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
    }.get
    if not tables:
        return schema().empty_table().to_pandas(types_mapper=nullable)
    return pa.concat_tables(tables).to_pandas(types_mapper=nullable)


def jsonl(merged: Any) -> bytes:
    """``results.jsonl``: one JSON object per row of the Arrow table ``merged``."""
    return "".join(json.dumps(row) + "\n" for row in merged.to_pylist()).encode()


def csv(rows: Any) -> bytes:
    """``results.csv`` from the rows (a DataFrame); boxes as JSON text, empty when null."""
    flat = rows.copy()
    flat["boxes"] = [
        "" if b is None else json.dumps([[int(v) for v in box] for box in b]) for b in flat["boxes"]
    ]
    return bytes(flat.to_csv(index=False).encode())
