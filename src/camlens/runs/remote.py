"""A run folder in an object store: ``--out s3://bucket/prefix`` (``gs://``, any pyarrow file
system URI), for both engines, through the same pipeline as a local folder.

The driver keeps the run's own small files (manifest, the parts it merges, merged rows, report,
log) in a staging folder of its own (:func:`~camlens.runs.store.local_folder`) and mirrors them to
the store. :class:`RemoteWriter` is the local :class:`~camlens.runs.writer.RunWriter` on that
folder, with:

- the same refusals, about the prefix: a prefix holding objects but no camlens ``run.json`` is
  refused untouched; a run there needs ``--resume`` (the same settings) or ``--overwrite``, which
  deletes only the objects the run wrote (the files its rows name, its parts, merged rows,
  report, manifest, log);
- a lease object instead of an OS lock (:class:`Lease`);
- at the start, the store's parts, merged rows and manifest copied into the staging folder
  (``--resume`` reads them; a row is done when its map object exists: an upload is whole or
  absent), and the new manifest uploaded at once;
- maps, overlays and Parquet parts written straight to the store (by the Ray actors, or by
  this writer for the local engine), so a killed run loses no finished batch;
- at the end, the store's parts copied in and merged, then ``results.parquet``,
  ``results.jsonl``/``.csv``, the report and the log uploaded, the manifest last, and the
  merged parts deleted from the store.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from camlens.errors import CamlensValueError
from camlens.runs.folder import (
    FORMAT,
    MANIFEST,
    PART,
    PARTS,
    SPOOL,
    SPOOLED,
    fetch_run,
    read_rows,
)
from camlens.runs.store import Store, is_remote, local_folder, shown
from camlens.runs.writer import (
    FILE_COLUMNS,
    LOCK,
    LOG,
    OWNED,
    RunWriter,
    _busy,
    check_entries,
    check_flags,
    inside,
    same_settings,
)
from camlens.runs.writer import claim as claim_folder

#: Seconds a lease lasts unless renewed; its holder renews it every third of that.
LEASE_S = 600.0
#: Seconds between writing a lease and reading it back to confirm it.
SETTLE_S = 0.5
#: What the driver uploads when the run finishes, the manifest last.
FINISHED = ("results.parquet", "results.jsonl", "results.csv", "report.html", "report-data.js")


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


class Lease:
    """One writer per prefix of a store that has no locks: the object ``.camlens.lock`` holds a
    random token, the holder's host and pid, its start and its expiry (:data:`LEASE_S` after its
    last renewal; a thread renews it every third of that while the run goes).

    :meth:`take` refuses a lease of another run that has not expired, writes its own, waits
    :data:`SETTLE_S` and reads it back: another run that wrote its lease meanwhile wins and this
    one is refused. Object stores reached through pyarrow have no create-if-absent, so this is
    not an OS lock: two runs could both go on only if one of them took longer than
    :data:`SETTLE_S` between reading the prefix and writing its lease. A lease left by a run
    that died expires by itself; deleting the object breaks it at once."""

    def __init__(self, store: Store, where: str) -> None:
        self.store, self.where = store, where
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def held(self) -> dict[str, Any] | None:
        """The lease in the store, or None (none, unreadable, or expired)."""
        try:
            who = json.loads(self.store.read(LOCK) or b"null")
            expired = float(who["expires_s"]) < time.time()
        except (ValueError, TypeError, KeyError):
            return None
        return None if expired else who

    def check(self) -> None:
        """Refuse a live lease of another run, naming it and how to break it."""
        who = self.held()
        if who is not None and who.get("token") != self.token:
            holder = f"pid {who.get('pid')} on {who.get('host')}, started {who.get('started')}"
            raise CamlensValueError(
                f"{_busy(self.where, holder)}. An object store has no file locks: the run holds "
                f"the lease {self.where}/{LOCK} until {_time(float(who['expires_s']))}; if that "
                "run is gone, delete that object to break its lease"
            )

    def take(self) -> None:
        """Hold the lease (see the class), renewed by a thread until :meth:`release`."""
        self.check()
        self._write()
        time.sleep(SETTLE_S)
        self.check()  # another run's lease written meanwhile wins
        self._thread = threading.Thread(target=self._renew, name="camlens-lease", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        who = {
            "token": self.token, "pid": os.getpid(), "host": socket.gethostname(),
            "started": _time(self.started), "expires_s": time.time() + LEASE_S,
        }  # fmt: skip
        self.store.write(LOCK, json.dumps(who).encode())

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_S / 3):
            who = self.held()
            if who is None or who.get("token") != self.token:
                return  # broken by hand: never take it back from another run
            self._write()

    def release(self) -> None:
        """Stop renewing; delete the lease if it is still this run's (again: nothing)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            who = self.held()
            if who is not None and who.get("token") == self.token:
                self.store.delete(LOCK)


def claim(out: Path | str, *, resume: bool, overwrite: bool) -> None:
    """:func:`camlens.runs.writer.claim` for a folder or an object store's prefix, touching
    nothing."""
    if is_remote(out):
        _check(Store.at(out), shown(str(out)), resume, overwrite)
    else:
        claim_folder(Path(out), resume=resume, overwrite=overwrite)


def _check(store: Store, where: str, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """The checks of :func:`~camlens.runs.writer.claim` on a prefix; its run's manifest."""
    from pyarrow import fs

    check_flags(resume, overwrite)
    try:
        kind = store.system.get_file_info(store.root).type
        names = list(store.entries()) if kind != fs.FileType.File else []
        manifest = store.read(MANIFEST) if kind != fs.FileType.File else None
    except OSError as error:
        raise CamlensValueError(
            f"--out {where!r} cannot be read ({error}): check the URI, its credentials and its "
            "region"
        ) from None
    if kind == fs.FileType.File:
        raise CamlensValueError(f"--out {where!r} is a file, not a folder: choose a folder")
    try:
        old = json.loads(manifest or b"null")
    except ValueError:  # a damaged run.json: not a run's
        old = None
    run = isinstance(old, dict) and old.get("format") == FORMAT
    Lease(store, where).check()
    check_entries(where, run, names, resume or overwrite)
    return old if run else None


def open_writer(
    out: Path | str, info: dict[str, Any], resume: bool = False, overwrite: bool = False
) -> RunWriter:
    """The writer of the run folder ``out``: a folder's, or an object store's."""
    if is_remote(out):
        return RemoteWriter(str(out), info, resume, overwrite)
    return RunWriter(Path(out), info, resume, overwrite)


class RemoteWriter(RunWriter):
    """A :class:`~camlens.runs.writer.RunWriter` of an object store's prefix ``uri`` (see the
    module's docstring); holds the prefix's :class:`Lease` until it finishes or closes."""

    remote = True

    def __init__(
        self, uri: str, info: dict[str, Any], resume: bool = False, overwrite: bool = False
    ) -> None:
        store, where, staging = Store.at(uri), shown(uri), local_folder(uri)
        old = _check(store, where, resume, overwrite)
        if old is not None and resume:
            same_settings(where, old, info)  # before the lease: a refusal touches nothing
        self.lease = Lease(store, where)
        self.lease.take()
        try:
            shutil.rmtree(staging, ignore_errors=True)  # this run's alone while it holds the lease
            fetch_run(store, staging)
            if old is not None and overwrite:
                _remove(store, staging)
            self._maps = store.entries("maps") if old is not None and resume else {}
            super().__init__(staging, info, resume, overwrite)
        except BaseException:
            self.lease.release()
            raise
        self.store, self.label = store, where
        for file in self.damaged:  # set aside in the store too
            name = file.relative_to(staging).as_posix()
            store.system.move(store.path(name.split(".damaged")[0]), store.path(name))
        self._upload(MANIFEST)

    def _whole(self, name: str) -> bool:
        """A map object is whole when it is there: an upload is whole or absent."""
        return bool(self._maps.get(name.rsplit("/", 1)[-1]))

    def _upload(self, name: str) -> None:
        file = self.out / name
        if file.is_file():
            self.store.write(name, file.read_bytes())

    def _finish(self, title: str, complete: bool) -> Any:
        parts = self.out / PARTS
        for name in self.store.entries(PARTS):  # the parts the actors (or write()) stored
            if PART.fullmatch(name) and not (parts / name).exists():
                self.store.download(f"{PARTS}/{name}", parts / name)
        merged = [name for name in os.listdir(parts) if PART.fullmatch(name)]
        rows = super()._finish(title, complete)
        for name in (*FINISHED, LOG):
            self._upload(name)
        for name in merged:
            self.store.delete(f"{PARTS}/{name}")
        self._upload(MANIFEST)
        return rows

    def close(self) -> None:
        super().close()
        self.lease.release()


def _remove(store: Store, staging: Path) -> None:
    """Delete the objects the run in ``store`` wrote (``--overwrite``), as
    :func:`~camlens.runs.writer.remove_run` does in a folder; its rows are in ``staging``."""
    rows = read_rows(staging, damaged=[])
    for column in FILE_COLUMNS:
        for name in rows[column].dropna().unique():
            if inside(staging, name) is not None:
                store.delete(name)
    for name in store.entries(PARTS):
        if PART.fullmatch(name.split(".damaged")[0]) or name.startswith(".part-"):
            store.delete(f"{PARTS}/{name}")
    for name in store.entries():
        if name.split(".damaged")[0] in OWNED and name != MANIFEST:
            store.delete(name)
    for name in store.entries(SPOOL):  # a killed Ray run's to-do list
        if SPOOLED.fullmatch(name):
            store.delete(f"{SPOOL}/{name}")
