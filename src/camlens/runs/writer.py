"""Writing a run folder (see :mod:`camlens.runs.folder` for the layout) as batches finish.

A run writes only into a missing or empty folder or a camlens run (:func:`claim`), holds an OS
lock on it from start to finish (one writer per folder), and removes only files it wrote
(``overwrite=True``). Each :meth:`RunWriter.write` stores a batch's files first, then its rows as
one Parquet part, fsynced under a temporary name and renamed, so a part is whole or absent: a run
killed at any point loses no finished row, and ``resume=True`` (same settings only) skips every
image whose rows and maps are there, setting damaged files aside. :meth:`RunWriter.finish` merges
the parts into ``results.parquet``, writes ``results.jsonl``/``.csv`` from the merged rows, then
the report, and the manifest last.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import socket
import tempfile
import time
import traceback
import weakref
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from camlens.errors import CamlensValueError
from camlens.images.decode import Failure
from camlens.runs import report, row
from camlens.runs.durable import write_atomic, write_bytes
from camlens.runs.folder import (
    FORMAT,
    MANIFEST,
    PARTS,
    RESULTS,
    SPOOL,
    SPOOLED,
    VERSION,
    read_rows,
)
from camlens.runs.records import Record
from camlens.runs.store import Store, local_folder

JSONL, CSV, LOCK, LOG = "results.jsonl", "results.csv", ".camlens.lock", "camlens.log"
#: Files of a run at its top level, removed by ``overwrite``.
OWNED = (RESULTS, JSONL, CSV, MANIFEST, "report.html", "report-data.js", LOG)
#: The row columns naming a file of the run, and the folders they are in.
FILE_COLUMNS = ("map", "overlay", "panel", "image")
FOLDERS = ("maps", "overlays", "panels", "images")
#: Manifest keys that define a run's rows: ``resume`` refuses a run whose values differ.
RUN_KEYS = (
    "task", "model", "weights", "weights_sha256", "seed", "size", "preprocess", "methods",
    "layer", "target", "precision", "limit", "colormap", "alpha", "threshold", "boxes",
    "box_threshold", "overlay_format", "panel", "copy_images", "activation",
)  # fmt: skip


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of the camlens run in ``folder``, or None when it holds none."""
    try:
        info = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("format") == FORMAT else None


def _holder(folder: Path) -> str | None:
    """Who holds ``folder``'s lock ("pid 12 on host, started ..."), or None when nobody does.
    Opens an existing lock file only to read it: creates nothing."""
    import fcntl

    try:
        handle = os.open(folder / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _describe(os.pread(handle, 4096, 0))
    finally:
        os.close(handle)  # also releases the probe's shared lock
    return None


def _describe(data: bytes) -> str:
    try:
        who = json.loads(data)
        return f"pid {who['pid']} on {who['host']}, started {who['started']}"
    except (ValueError, KeyError, TypeError):
        return "its pid is unknown"


def _busy(out: Path | str, holder: str) -> CamlensValueError:
    """The error for a folder whose lock ``holder`` (see :func:`_describe`) holds."""
    return CamlensValueError(
        f"{str(out)!r} is being written by another camlens run ({holder}); wait for it to "
        "finish or choose another --out"
    )


def claim(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Check that a run may write into ``out``, touching nothing: ``out`` is missing, an empty
    folder, or a camlens run (then ``resume`` or ``overwrite`` says what to do with it) that no
    other run is writing, and it (or its nearest existing parent) is writable."""
    out = Path(out)
    check_flags(resume, overwrite)
    if out.exists() and not out.is_dir():
        raise CamlensValueError(f"--out {str(out)!r} is a file, not a folder: choose a folder")
    if out.is_dir():
        holder = _holder(out)
        if holder is not None:
            raise _busy(out, holder)
        _check_contents(out, resume or overwrite)
    _check_writable(out)


def check_flags(resume: bool, overwrite: bool) -> None:
    """Refuse ``--resume`` with ``--overwrite``."""
    if resume and overwrite:
        raise CamlensValueError(
            "--resume continues a run and --overwrite replaces it: choose one of them"
        )


def _check_contents(out: Path, replace_or_resume: bool) -> None:
    """Refuse a folder that holds anything but a camlens run, and a run unless
    ``replace_or_resume``."""
    run = _manifest(out) is not None
    check_entries(str(out), run, [entry.name for entry in out.iterdir()], replace_or_resume)


def check_entries(out: str, run: bool, names: Iterable[str], replace_or_resume: bool) -> None:
    """Refuse the folder or prefix ``out`` holding ``names`` when it holds anything but a
    camlens run (``run``: it has a manifest), and a run unless ``replace_or_resume``."""
    if not run and any(name != LOCK for name in names):
        raise CamlensValueError(
            f"--out {out!r} is not empty and not a camlens run (it has no camlens "
            f"{MANIFEST}): choose an empty or new folder"
        )
    if run and not replace_or_resume:
        raise CamlensValueError(
            f"--out {out!r} holds a camlens run: add --resume to continue it or "
            "--overwrite to replace it"
        )


def _check_writable(out: Path) -> None:
    folder = out
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise CamlensValueError(
            f"--out {str(out)!r}: {str(folder)!r} is a file, not a folder: choose a folder"
        )
    try:
        handle, probe = tempfile.mkstemp(prefix=".camlens-probe-", dir=folder)
    except OSError as error:
        raise CamlensValueError(
            f"cannot write to {str(folder)!r} ({error.strerror or error}): choose another --out "
            "or make it writable"
        ) from None
    os.close(handle)
    os.unlink(probe)


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Each change as "key: old -> new", for the keys of :data:`RUN_KEYS` in the ``old``
    manifest that ``new`` changes (methods compared as a set)."""
    changed = []
    for key in RUN_KEYS:
        if key not in old:
            continue  # a run written before camlens recorded it
        before, after = old[key], json.loads(json.dumps(new.get(key)))
        if key == "methods" and isinstance(before, list) and isinstance(after, list):
            same = set(before) == set(after)
        else:
            same = before == after
        if not same:
            changed.append(f"{key}: {json.dumps(before)} -> {json.dumps(after)}")
    return changed


def same_settings(out: Path | str, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to resume the run ``old`` with the settings ``new`` when they differ."""
    changed = _changes(old, new)
    if changed:
        raise CamlensValueError(
            f"--resume: {str(out)!r} holds a run with other settings ("
            + "; ".join(changed)
            + "): use --overwrite to replace it or another --out"
        )


def complete_png(path: Path) -> bool:
    """Whether ``path`` is a whole PNG file (not missing, empty or cut short)."""
    from PIL import Image, UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            return False
        with Image.open(path) as image:
            image.verify()  # checks every chunk's CRC, but not that the file ends
        with open(path, "rb") as handle:
            handle.seek(-12, os.SEEK_END)
            return handle.read(12) == b"\0\0\0\0IEND\xaeB`\x82"
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError):
        return False


def _set_aside(file: Path) -> Path:
    """Rename a damaged file to ``<name>.damaged`` (``.damaged-2``... if taken); never delete."""
    target, n = file.with_name(f"{file.name}.damaged"), 1
    while target.exists():
        n += 1
        target = file.with_name(f"{file.name}.damaged-{n}")
    os.replace(file, target)
    return target


def inside(out: Path, name: Any) -> Path | None:
    """``out / name`` when ``name`` is a file name of a row in one of the run's folders."""
    if not isinstance(name, str) or not name:
        return None
    path = Path(os.path.normpath(out / name))
    if path.parent.parent != Path(os.path.normpath(out)) or path.parent.name not in FOLDERS:
        return None
    return path


def remove_run(out: Path) -> None:
    """Remove what the camlens run in ``out`` wrote: the files its rows name, its parts,
    results, report, manifest and log, and its folders left empty. Nothing else."""
    rows = read_rows(out, damaged=[])
    for column in FILE_COLUMNS:
        for name in rows[column].dropna().unique():
            path = inside(out, name)
            if path is not None:
                path.unlink(missing_ok=True)
    parts = out / PARTS
    for pattern in ("part-*.parquet", "part-*.parquet.damaged*", ".part-*.parquet.tmp"):
        for file in parts.glob(pattern):
            file.unlink()
    for name in OWNED:
        for file in (out / name, out / f".{name}.tmp", *out.glob(f"{name}.damaged*")):
            file.unlink(missing_ok=True)
    for file in (out / SPOOL).glob("*inputs-*"):  # a killed Ray run's to-do list (or its .tmp)
        if SPOOLED.fullmatch(file.name.removeprefix(".").removesuffix(".tmp")):
            file.unlink()
    for folder in (*FOLDERS, PARTS, SPOOL):
        with contextlib.suppress(OSError):  # missing, or holds files camlens did not write
            (out / folder).rmdir()


class RunWriter:
    """Writes the run folder ``out``; ``info`` goes into the manifest (model, methods, size,
    labels, render settings). With ``resume``, the rows already there are kept (the settings of
    :data:`RUN_KEYS` must be the same) and :attr:`done` holds the (path, method) pairs finished;
    with ``overwrite``, the run there is removed first (:func:`remove_run`).

    Holds ``out``'s lock until :meth:`finish` or :meth:`close` (also a context manager). Files
    and parts go through :attr:`store` (the folder's; an object store's for
    :class:`~camlens.runs.remote.RemoteWriter`); :attr:`label` names the run in messages."""

    remote = False  # the run folder is an object store's (its report links inputs absolutely)

    def __init__(
        self, out: Path, info: dict[str, Any], resume: bool = False, overwrite: bool = False
    ) -> None:
        self.out = Path(out)
        self.store, self.label = Store.at(self.out), str(self.out)
        claim(self.out, resume=resume, overwrite=overwrite)
        old = _manifest(self.out)
        if old is not None and resume:
            same_settings(self.out, old, info)  # before the lock: a refusal touches nothing
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = self._take_lock()
        self._release = weakref.finalize(self, os.close, self._lock)
        try:
            _check_contents(self.out, resume or overwrite)  # again, now that it is ours
            old = _manifest(self.out)
            if old is not None and overwrite:
                remove_run(self.out)
            self.done: set[tuple[str, str]] = set()
            self.damaged: list[Path] = []
            if old is not None and resume:
                self._resume(old, info)
            self.info = {"format": FORMAT, "version": VERSION, **info, "created": _now()}
            self.info["finished"] = None
            write_bytes(self.out / MANIFEST, json.dumps(self.info, indent=2).encode())
            for folder in ("maps", "overlays", PARTS):
                (self.out / folder).mkdir(exist_ok=True)
            names = [p.name for p in (self.out / PARTS).iterdir()]
            numbers = [int(m[1]) for m in map(re.compile(r"part-(\d+)[.-]").match, names) if m]
            self._parts = itertools.count(max(numbers, default=-1) + 1)  # after every part
        except BaseException:
            self.close()
            raise
        self.seconds = 0.0  # time spent writing

    def _take_lock(self) -> int:
        """Lock ``out`` for this run (fcntl.flock on ``.camlens.lock``, which says who holds it)."""
        import fcntl

        handle = os.open(self.out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(handle, 4096, 0))
            os.close(handle)
            raise _busy(self.out, holder) from None
        who = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(who).encode(), 0)
        return handle

    def _resume(self, old: dict[str, Any], info: dict[str, Any]) -> None:
        """Refuse other settings; set damaged files aside; keep as done the explained rows whose
        map is a whole PNG."""
        same_settings(self.out, old, info)
        for stale in (self.out / PARTS).glob(".part-*.parquet.tmp"):
            stale.unlink()  # a part being written when the run was killed
        previous = read_rows(self.out, damaged=self.damaged)
        self.damaged = [_set_aside(file) for file in self.damaged]
        explained = previous[previous["error"].isna()]
        self.done = {
            (path, method)
            for path, method, name in zip(explained["path"], explained["method"], explained["map"])
            if isinstance(name, str) and self._whole(name)
        }

    def _whole(self, name: str) -> bool:
        """Whether the run's map ``name`` is whole (:func:`complete_png`)."""
        return complete_png(self.out / name)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the folder's lock (again: nothing)."""
        self._release()

    def write(self, records: Sequence[Record], failures: Iterable[Failure] = ()) -> None:
        """Store ``records`` (files, then rows) and ``failures`` as failure rows."""
        begin = time.perf_counter()
        for record in records:
            for name, data in record.files.items():
                self.store.write(name, data)
        rows = [r.row for r in records] + [row.failure_row(f.path, f.reason) for f in failures]
        if rows:
            self.store.write_part(PARTS, f"part-{self.reserve():06d}.parquet", row.table(rows))
        self.seconds += time.perf_counter() - begin

    def reserve(self) -> int:
        """The next part number: parts sort in the order they are reserved (the Ray engine's
        actors name theirs ``part-<number>-<index>-<token>.parquet``)."""
        return next(self._parts)

    def finish(self, title: str = "camlens report", complete: bool = True) -> Any:
        """Merge the parts into ``results.parquet``; write ``results.jsonl``/``.csv`` from its
        rows, the report, then the manifest's counts (``finished`` stays null when the run was not
        ``complete``); release the lock. Returns the run's rows (a DataFrame). Also right after an
        interruption: everything finished is in the merged file, and ``resume=True`` goes on."""
        try:
            return self._finish(title, complete)
        finally:
            self.close()

    def _finish(self, title: str, complete: bool) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        merged = list((self.out / PARTS).glob("part-*.parquet"))  # a part written later stays
        rows = read_rows(self.out)
        table = pa.Table.from_pandas(rows, schema=row.schema(), preserve_index=False)
        write_atomic(self.out / RESULTS, lambda h: pq.write_table(table, h, compression="zstd"))
        for part in merged:
            part.unlink()
        with contextlib.suppress(OSError):  # holds a damaged part set aside
            (self.out / PARTS).rmdir()
        write_bytes(self.out / JSONL, row.jsonl(table))
        write_bytes(self.out / CSV, row.csv(rows))
        failed = rows["error"].notna()
        self.info.update(
            finished=_now() if complete else None,
            images=int(rows.loc[~failed, "path"].nunique()),
            rows=int((~failed).sum()),
            failures=int(failed.sum()),
        )
        report.write_report(self.out, rows, self.info, title, absolute=self.remote)
        write_bytes(self.out / MANIFEST, json.dumps(self.info, indent=2).encode())
        return rows


def log_traceback(out: Any, heading: str, text: str | None = None) -> Path:
    """Append ``text`` (the traceback of the exception being handled by default) under a
    timestamped ``heading`` to ``OUT/camlens.log`` (a temporary folder's when OUT cannot be
    written); returns the log's path."""
    entry = f"--- {_now()} {heading}\n{traceback.format_exc() if text is None else text}\n"
    for folder in ([local_folder(out)] if out is not None else []) + [Path(tempfile.gettempdir())]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / LOG, "a", encoding="utf-8", errors="backslashreplace") as handle:
                handle.write(entry)
            return folder / LOG
        except OSError:
            continue
    return Path(tempfile.gettempdir()) / LOG
