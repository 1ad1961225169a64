"""Writing a run folder (see :mod:`camlens.run` for the layout) as batches finish.

Each :meth:`RunWriter.write` stores a batch's files first, then its rows as one Parquet part
(written to a temporary name and renamed, so a part is whole or absent) and appends them to
``results.jsonl``. A run killed at any point therefore loses no finished row, and
``resume=True`` skips every image whose rows are there. :meth:`RunWriter.finish` merges the parts
into ``results.parquet`` and writes ``results.csv``, the report and the manifest's counts.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from camlens.app.inputs import Failure
from camlens.app.records import Record, failure_row
from camlens.run import FORMAT, MANIFEST, PARTS, RESULTS, VERSION, read_rows, schema

JSONL, CSV = "results.jsonl", "results.csv"
#: Files a new run (not resumed) removes from its folder before it starts.
OWNED = (RESULTS, JSONL, CSV, MANIFEST, "report.html", "report-data.js")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def claim(out: Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """Check, touching nothing, that a run can write into ``out``: not a file, and writable
    (its nearest existing folder takes a new file). Raises a CamlensValueError naming the fix."""
    import tempfile

    from camlens.errors import CamlensValueError

    out = Path(out)
    existing = next(p for p in (out, *out.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise CamlensValueError(
            f"--out {out}: {existing} is a file, not a folder; pass a new or empty folder"
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise CamlensValueError(
            f"--out {out}: {existing} is not writable ({error.strerror}); pass a folder you can "
            "write to"
        ) from error
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CamlensValueError(
            f"--out {out}: {existing} is not writable; pass a folder you can write to"
        )


class RunWriter:
    """Writes the run folder ``out``; ``info`` goes into the manifest (model, methods, size,
    labels, render settings). With ``resume``, the rows already there are kept and
    :attr:`done` holds the (path, method) pairs finished."""

    def __init__(
        self, out: Path, info: dict[str, Any], resume: bool = False, overwrite: bool = False
    ) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        for folder in ("maps", "overlays", PARTS):
            (self.out / folder).mkdir(exist_ok=True)
        previous = read_rows(self.out) if resume else None
        if not resume:
            for name in OWNED:
                (self.out / name).unlink(missing_ok=True)
            shutil.rmtree(self.out / PARTS)
            (self.out / PARTS).mkdir()
        self.done: set[tuple[str, str]] = set()
        if previous is not None:
            explained = previous[previous["error"].isna()]
            self.done = set(zip(explained["path"], explained["method"]))
        self._parts = len(list((self.out / PARTS).glob("part-*.parquet")))
        self.info = {"format": FORMAT, "version": VERSION, **info, "created": _now()}
        self.info["finished"] = None
        _atomic(self.out / MANIFEST, json.dumps(self.info, indent=2).encode())
        self.seconds = 0.0  # time spent writing

    def write(self, records: Sequence[Record], failures: Iterable[Failure] = ()) -> None:
        """Store ``records`` (files, then rows) and ``failures`` as failure rows."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        begin = time.perf_counter()
        made: set[Path] = set()
        for record in records:
            for name, data in record.files.items():
                path = self.out / name
                if path.parent not in made:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    made.add(path.parent)
                path.write_bytes(data)
        rows = [r.row for r in records] + [failure_row(f.path, f.reason) for f in failures]
        if rows:
            columns = schema().names
            table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows], schema())
            part = self.out / PARTS / f"part-{self._parts:06d}.parquet"
            temporary = part.with_name(f".{part.name}.tmp")
            pq.write_table(table, temporary, compression="zstd")
            os.replace(temporary, part)
            self._parts += 1
            with open(self.out / JSONL, "a", encoding="utf-8") as handle:
                handle.write("".join(json.dumps(row) + "\n" for row in rows))
        self.seconds += time.perf_counter() - begin

    def finish(self, title: str = "camlens report", complete: bool = True) -> Any:
        """Merge the parts into ``results.parquet``; write ``results.csv``, the report and the
        manifest's counts (``finished`` stays null when the run was not ``complete``). Returns the
        run's rows (a DataFrame). Also right after an interruption: everything finished is in the
        merged file, and ``resume=True`` goes on from there."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from camlens.report import write_report

        rows = read_rows(self.out)
        table = pa.Table.from_pandas(rows, schema=schema(), preserve_index=False)
        temporary = self.out / f".{RESULTS}.tmp"
        pq.write_table(table, temporary, compression="zstd")
        os.replace(temporary, self.out / RESULTS)
        shutil.rmtree(self.out / PARTS, ignore_errors=True)
        csv_rows = rows.copy()
        csv_rows["boxes"] = [
            "" if b is None else json.dumps([[int(v) for v in box] for box in b])
            for b in csv_rows["boxes"]
        ]
        csv_rows.to_csv(self.out / CSV, index=False)
        failed = rows["error"].notna()
        self.info.update(
            finished=_now() if complete else None,
            images=int(rows.loc[~failed, "path"].nunique()),
            rows=int((~failed).sum()),
            failures=int(failed.sum()),
        )
        _atomic(self.out / MANIFEST, json.dumps(self.info, indent=2).encode())
        write_report(self.out, rows, self.info, title)
        return rows
