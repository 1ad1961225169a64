"""The run folders ``camlens serve --run`` was given: summaries, filtered pages of rows, files.

Each folder is read once with :func:`camlens.load_run`; filters, sorting and paging are pandas
column operations on its results (a 50,000-row run answers a page in milliseconds). Files are
served from inside a run folder only: a path is resolved (symbolic links followed) and must stay
below the folder's own resolved path. A row's original image, which may lie outside the folder, is
reached by row number only (never by a path from the browser) and is sent re-encoded, so only image
content ever leaves it.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from camlens.errors import CamlensValueError, CamlensWarning
from camlens.runs.folder import MANIFEST, load_run, source_path
from camlens.runs.row import PAGE_COLUMNS
from camlens.serve.guards import shown
from camlens.serve.uploads import decode_image

#: Sort keys of :meth:`Runs.rows`: a column each (``row``: the run's own order).
SORTS = {
    "row": None,
    "probability": "probability",
    "target_probability": "target_probability",
    "predicted": "predicted",
    "true": "true_label",
    "stem": "stem",
}
MAX_LIMIT = 500
#: What a run folder's files may be served as: its maps, overlays, panels and copied images.
SERVED = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class Filters:
    """Which rows a page shows: each None means no condition."""

    method: str | None = None
    predicted: int | None = None
    true: int | None = None
    mistakes: bool = False
    min_probability: float | None = None
    max_probability: float | None = None
    path: str | None = None
    sort: str = "row"
    descending: bool = False
    offset: int = 0
    limit: int = 60


def _clean(value: Any) -> Any:
    """A pandas cell as JSON: NA and NaN become None, numpy scalars Python numbers."""
    if value is None:
        return None
    try:
        import pandas as pd

        if pd.isna(value) is True:
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class Runs:
    """Run folders by number (``"0"``, ``"1"``...), in the order given. A folder that is not a
    run (no ``run.json``) is a ``CamlensValueError``; a run that cannot be read (a damaged
    ``results.parquet`` or part) is skipped with a :class:`~camlens.errors.CamlensWarning` naming
    it and the reason, listed in ``skipped``, and the others are served."""

    def __init__(self, folders: Sequence[str | os.PathLike]) -> None:
        self.runs: list[Any] = []
        self.skipped: list[tuple[str, str]] = []
        for folder in folders:
            run = self._load(Path(folder))
            if run is not None:
                self.runs.append(run)
        self.roots = [Path(run.folder).resolve() for run in self.runs]

    def _load(self, folder: Path) -> Any:
        if not (folder / MANIFEST).is_file():
            return load_run(folder)  # the error says what a run folder is
        try:
            return load_run(folder)
        except Exception as error:  # a damaged file: pyarrow's errors, OSError, a CamlensError
            reason = f"{type(error).__name__}: {error}"
            self.skipped.append((str(folder), reason))
            warnings.warn(
                f"run {str(folder)!r} skipped: it cannot be read ({reason}); the other runs are "
                "served (camlens explain --resume repairs a run)",
                CamlensWarning,
                stacklevel=3,
            )
            return None

    def get(self, run: int) -> Any:
        if not 0 <= run < len(self.runs):
            raise CamlensValueError(
                f"run: expected a run number 0..{len(self.runs) - 1}, got {run}"
            )
        return self.runs[run]

    def listing(self) -> list[dict[str, Any]]:
        return [
            {
                "id": i,
                "name": run.folder.name,
                "model": run.info.get("model"),
                "methods": run.info.get("methods", []),
                "rows": len(run.results),
                "failures": len(run.failures),
            }
            for i, run in enumerate(self.runs)
        ]

    def summary(self, run: int) -> dict[str, Any]:
        """The manifest, counts per method and predicted class, accuracy and the failures."""
        found = self.get(run)
        frame = found.results
        judged = frame["correct"].dropna()
        classes = (
            frame.groupby(["predicted", "predicted_name"], dropna=False).size().reset_index()
            if len(frame)
            else None
        )
        return {
            "id": run,
            "name": found.folder.name,
            "info": {key: _clean(value) for key, value in found.info.items()},
            "rows": len(frame),
            "images": int(frame["path"].nunique()),
            "methods": {str(k): int(v) for k, v in frame["method"].value_counts().items()},
            "predicted": []
            if classes is None
            else [
                {"class": int(r.iloc[0]), "name": _clean(r.iloc[1]), "rows": int(r.iloc[2])}
                for _, r in classes.iterrows()
            ],
            "accuracy": float(judged.astype(bool).mean()) if len(judged) else None,
            "failures": [
                {"path": str(r["path"]), "error": str(r["error"])}
                for _, r in found.failures.head(100).iterrows()
            ],
        }

    def rows(self, run: int, filters: Filters) -> dict[str, Any]:
        """One page of the rows that pass ``filters``, sorted, with the total that pass."""
        frame = self.get(run).results
        if filters.sort not in SORTS:
            raise CamlensValueError(
                f"sort: expected one of {', '.join(SORTS)}, got {shown(filters.sort)}"
            )
        if not 1 <= filters.limit <= MAX_LIMIT or filters.offset < 0:
            raise CamlensValueError(
                f"limit: expected 1..{MAX_LIMIT} and offset >= 0, got limit={filters.limit}, "
                f"offset={filters.offset}"
            )
        keep = frame["method"].notna()
        if filters.method:
            keep &= frame["method"] == filters.method
        if filters.predicted is not None:
            keep &= frame["predicted"] == filters.predicted
        if filters.true is not None:
            keep &= frame["true_label"] == filters.true
        if filters.mistakes:
            keep &= frame["correct"] == False  # noqa: E712 (a nullable boolean column)
        if filters.min_probability is not None:
            keep &= frame["probability"] >= filters.min_probability
        if filters.max_probability is not None:
            keep &= frame["probability"] <= filters.max_probability
        if filters.path:
            keep &= frame["path"] == filters.path
        chosen = frame[keep.fillna(False).astype(bool)]
        column = SORTS[filters.sort]
        if column is not None:
            chosen = chosen.sort_values(
                column, ascending=not filters.descending, kind="stable", na_position="last"
            )
        elif filters.descending:
            chosen = chosen.iloc[::-1]
        page = chosen.iloc[filters.offset : filters.offset + filters.limit]
        return {
            "total": len(chosen),
            "offset": filters.offset,
            "rows": [
                {"row": int(index), **{key: _clean(record[key]) for key in PAGE_COLUMNS}}
                for index, record in page.iterrows()
            ],
        }

    def file(self, run: int, relative: str) -> Path:
        """The file at ``relative`` inside run ``run``'s folder; anything that resolves outside
        it (``..``, an absolute path, a symbolic link out) is refused."""
        self.get(run)
        root = self.roots[run]
        try:
            candidate = (root / relative).resolve()
            candidate.is_file()
        except OSError as error:  # a name too long for the file system, a loop of links
            raise FileNotFoundError(relative) from error
        if not candidate.is_relative_to(root) or candidate == root:
            raise CamlensValueError(
                f"path: expected a file inside run {run}'s folder, got {shown(relative)}"
            )
        if candidate.suffix.lower() not in SERVED:
            raise CamlensValueError(
                f"path: expected an image ({', '.join(SERVED)}), got {shown(relative)}"
            )
        if not candidate.is_file():
            raise FileNotFoundError(relative)
        return candidate

    def original(self, run: int, row: int, max_pixels: int) -> bytes:
        """Row ``row``'s input image (its copy in the folder, else the path the run recorded),
        decoded under the upload limits and sent as PNG."""
        found = self.get(run)
        if not 0 <= row < len(found.results):
            raise CamlensValueError(f"row: expected 0..{len(found.results) - 1}, got {row}")
        record = found.results.iloc[row]
        copy = _clean(record["image"])
        source = self.file(run, copy) if isinstance(copy, str) else source_path(str(record["path"]))
        try:
            data = source.read_bytes()
        except OSError as error:
            raise FileNotFoundError(str(source)) from error
        buffer = io.BytesIO()
        Image.fromarray(decode_image(data, max_pixels)).save(buffer, "PNG")
        return buffer.getvalue()
