"""The local engine: a folder of images through a session into a run folder, at the model's speed.

Three stages run side by side so that the model never waits: decoding threads read and resize
the next batches (:func:`camlens.images.decode.stream`), the calling thread runs the model
(:func:`camlens.runs.records.explain_batch`), and one writer thread renders overlays, encodes maps
and writes rows (:func:`camlens.runs.records.render`, :class:`camlens.runs.writer.RunWriter`). Each
stage holds at most a couple of batches, so memory stays flat in the number of images. A file that
cannot be decoded, or a batch the model rejects, becomes failure rows and the run goes on.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from camlens.errors import CamlensError, CamlensValueError
from camlens.images.decode import (
    Failure,
    class_indices,
    collect,
    folder_labels,
    require_labels,
    stream,
)
from camlens.models.weights import weights_digest
from camlens.runs.records import Explained, RenderOptions, explain_batch, path_text, render
from camlens.runs.session import Session
from camlens.runs.writer import RunWriter, log_traceback


@dataclass
class RunSettings:
    """What to explain and how: methods, target (None: predicted; an index; "label"), layer,
    precision, images per forward pass, how rows are rendered, resume, folder labels; overwrite
    replaces a run already in the folder (only its files)."""

    methods: list[str]
    target: int | str | None = None
    layer: Any = "auto"
    precision: str = "auto"
    batch_size: int = 16
    render: RenderOptions = field(default_factory=RenderOptions)
    resume: bool = False
    labels_from_folders: bool = False
    decoders: int = 2
    class_map: dict[str, str | int] | None = None  # --class-map: folder -> class name or index
    overwrite: bool = False


@dataclass
class Summary:
    """What a run did: images explained now, skipped as already done, failures and seconds."""

    done: int = 0
    resumed: int = 0
    failures: list[Failure] = field(default_factory=list)
    ignored: int = 0  # non-image files in the folders and globs given
    seconds: float = 0.0
    rows: Any = None  # the run's rows (a DataFrame) once finished

    @property
    def exit_code(self) -> int:
        """0: everything explained; 1: some inputs failed."""
        return 1 if self.failures else 0


def output_names(files: Sequence[Path]) -> dict[Path, str]:
    """A distinct file-name stem per input, the same for the same inputs: its own stem made safe,
    or its path below the common folder when two inputs share a stem; names that still clash
    (``a b``, ``a_b``, ``a<b``; letter case aside) get a short hash of the whole path."""
    stems = Counter(path.stem for path in files)
    root = Path(os.path.commonpath([p.parent for p in files])) if files else Path()
    wanted = {
        path: _safe(path.stem if stems[path.stem] == 1 else "__".join(path.relative_to(root).parts))
        for path in files
    }
    clashes = Counter(name.lower() for name in wanted.values())
    return {
        path: name if clashes[name.lower()] == 1 else f"{name}-{_digest(path)}"
        for path, name in wanted.items()
    }


def _digest(path: Path) -> str:
    return hashlib.sha256(os.fsencode(path)).hexdigest()[:8]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name) or "image"


def manifest(session: Session, settings: RunSettings, engine: str = "local") -> dict[str, Any]:
    """The run's settings for ``run.json``."""
    return {
        "engine": engine,
        "model": session.spec,
        "weights": session.weights,
        "weights_sha256": weights_digest(session.spec, session.weights),
        "seed": session.seed,
        "methods": list(settings.methods),
        "layer": settings.layer if isinstance(settings.layer, str) else repr(settings.layer),
        "target": "pred" if settings.target is None else settings.target,
        "precision": settings.precision,
        "size": session.size,
        "preprocess": session.prepare.name,
        "labels": session.names,
        "classes": session.classes,
        "labels_from_folders": settings.labels_from_folders,
        "class_map": settings.class_map,
        **{k: v for k, v in asdict(settings.render).items() if k != "contours"},
    }


def to_do(
    files: Sequence[Path],
    writer: RunWriter,
    methods: Sequence[str],
    summary: Summary,
    echo: Callable[[str], None],
    total: Callable[[int], None] | None,
) -> list[Path]:
    """The files without a row for every method in ``writer``'s run yet; the rest are counted in
    ``summary.resumed`` and said, and ``total`` is told how many are to do."""
    todo = [f for f in files if any((path_text(f), m) not in writer.done for m in methods)]
    summary.resumed = len(files) - len(todo)
    if summary.resumed:
        echo(f"resume: {summary.resumed} image(s) already in {writer.out}, {len(todo)} to do")
    if total is not None:
        total(len(todo))
    return todo


#: What explaining a batch may raise that fails the batch's images, not the run: camlens' checks
#: and torch's errors (a model built for other inputs, out of memory).
EXPLAIN_ERRORS = (CamlensError, RuntimeError)


def failed_batch(paths: Sequence[object], error: BaseException) -> list[Failure]:
    """A failure per image of a batch that ``error`` stopped; the reason keeps its type and
    message."""
    reason = f"explaining failed: {type(error).__name__}: {error}"
    return [Failure(str(p), reason) for p in paths]


def log_failure(out: Path, paths: Sequence[object], text: str | None = None) -> None:
    """Append the traceback of a batch's failure (the exception being handled, or ``text``) to
    the run's log, ``OUT/camlens.log``."""
    log_traceback(out, f"explaining failed: {', '.join(str(p) for p in paths)}", text)


def explain_files(
    session: Session,
    paths: Sequence[str | os.PathLike],
    out: Path,
    settings: RunSettings,
    *,
    echo: Callable[[str], None] = print,
    advance: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
    title: str = "camlens report",
    on_explained: Callable[[Explained], None] | None = None,
) -> Summary:
    """Explain every image under ``paths`` with ``session`` into the run folder ``out``.

    ``total(n)`` is told how many images are to do, ``advance(k)`` after every batch;
    ``on_explained`` sees every batch's explanations (``camlens demo`` scores them).
    """
    if settings.target == "label" and not settings.labels_from_folders:
        raise CamlensValueError("--target label explains the true class: add --labels-from-folders")
    started = time.perf_counter()
    out = Path(out)
    files, failures, ignored = collect(paths, exclude=out)
    summary = Summary(failures=list(failures), ignored=ignored)
    for failure in failures:
        echo(f"failed: {failure.path}: {failure.reason}")
    if ignored:
        echo(f"{ignored} non-image file(s) ignored")
    classes = folder_labels(files, paths) if settings.labels_from_folders else {}
    require_labels(classes, settings.target)
    indices = class_indices(
        list(classes.values()), session.names, session.classes, settings.class_map, echo
    )
    stems = output_names(files)
    pending: list[Future] = []

    def store(explained: Explained | None, failed: list[Failure]) -> None:
        records = (
            render(explained, [stems[p] for p in explained.paths], session, settings.render)
            if explained is not None
            else []
        )
        writer.write(records, failed)

    def submit(explained: Explained | None, failed: list[Failure]) -> None:
        while len(pending) >= 2:  # backpressure: the writer is at most two batches behind
            pending.pop(0).result()
        pending.append(pool.submit(store, explained, failed))

    writer = RunWriter(out, manifest(session, settings), settings.resume, settings.overwrite)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="camlens-write")
    complete = False
    try:  # from here on, the writer finishes (and releases its lock) however the run ends
        todo = to_do(files, writer, settings.methods, summary, echo, total)
        if summary.failures:
            submit(None, list(summary.failures))
        for batch in stream(todo, settings.batch_size, session.size, settings.decoders):
            failed = list(batch.failures)
            explained = None
            if batch.unit is not None:
                names = [classes.get(p) for p in batch.paths]
                try:
                    explained = explain_batch(
                        session,
                        batch.unit,
                        batch.paths,
                        batch.images,
                        settings.methods,
                        settings.target,
                        settings.layer,
                        settings.precision,
                        [indices[n] if n is not None else -1 for n in names],
                        names,
                        batch.load_s,
                        settings.render.box_threshold if settings.render.boxes else None,
                    )
                except EXPLAIN_ERRORS as error:
                    failed += failed_batch(batch.paths, error)
                    log_failure(out, batch.paths)
                else:
                    failed += explained.failures
            for failure in failed:
                echo(f"failed: {failure.path}: {failure.reason}")
            summary.failures += failed
            if explained is not None:
                summary.done += len(explained.paths)
                if on_explained is not None:
                    on_explained(explained)
            submit(explained, failed)
            if advance is not None:
                advance(len(batch.paths) + len(batch.failures))
        complete = True
    finally:
        failed_write: BaseException | None = None
        for job in pending:  # every batch handed to the writer is written before finishing
            try:
                job.result()
            except BaseException as error:  # noqa: BLE001  (raised below, after finishing)
                failed_write = failed_write or error
        pool.shutdown()
        summary.rows = writer.finish(title, complete=complete and failed_write is None)
        summary.seconds = time.perf_counter() - started
    if failed_write is not None:
        raise failed_write
    return summary
