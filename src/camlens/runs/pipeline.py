"""One run, whichever engine explains it: collect → claim/resume → decode → explain → render →
write → finish, written once (:func:`run`).

An :class:`Engine` supplies only what differs: how inputs are listed (local files; object-storage
URIs for Ray), what must be up around the run (Ray itself), and how the files to do become
:class:`Outcome` s (decode, explain and render: in this process for the local engine and the
tasks, in Ray actors for the Ray engine). Everything else is the same for every engine: the
failures said as ``failed: PATH: REASON``, the ``resume:`` line, the lock and manifest of
:class:`~camlens.runs.writer.RunWriter`, failure rows, progress, the writer thread at most two
batches behind, the exit code and the finished manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from camlens.errors import CamlensError, CamlensValueError
from camlens.images.decode import Batch, Failure, class_indices, require_labels
from camlens.models.weights import weights_digest
from camlens.runs.records import Explained, Record, RenderOptions, explain_batch
from camlens.runs.remote import open_writer
from camlens.runs.row import path_text
from camlens.runs.session import Session
from camlens.runs.store import is_remote, local_folder
from camlens.runs.writer import RunWriter, log_traceback

T = TypeVar("T")


@dataclass
class RunSettings:
    """What to explain and how: methods, target (None: predicted; an index; "label"), layer,
    precision, images per forward pass, how rows are rendered, resume, folder labels; overwrite
    replaces a run already in the folder (only its files)."""

    methods: list[str]
    target: int | str | None = None
    activation: str | None = None
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
    engine: dict[str, Any] = field(default_factory=dict)  # the engine's own measures

    @property
    def exit_code(self) -> int:
        """0: everything explained; 1: some inputs failed."""
        return 1 if self.failures else 0


@dataclass
class Inputs:
    """What an engine found under the paths given: the files in order, the inputs that failed,
    the non-image files ignored, and each file's class folder (keyed by its text) where the
    run takes labels from folders."""

    files: list[Path]
    failures: list[Failure]
    ignored: int = 0
    classes: dict[str, str] = field(default_factory=dict)


@dataclass
class Job:
    """What an engine explains: the files to do, every file of the run (for stems that stay the
    same on resume), the folder, its writer, each file's class folder (``classes``, keyed by the
    file's text) and the class index of each folder name (``indices``)."""

    todo: list[Path]
    files: list[Path]
    out: Path
    session: Session
    settings: RunSettings
    writer: RunWriter
    classes: dict[str, str]
    indices: dict[str, int]

    def label(self, path: object) -> tuple[int, str | None]:
        """``path``'s true class index (-1: unknown) and folder name."""
        name = self.classes.get(str(path))
        return (self.indices[name] if name is not None else -1), name


@dataclass
class Hooks:
    """How a run talks to its caller: ``echo`` says a line, ``advance(k)`` follows progress
    after every batch, ``total(n)`` is told how many images are to do; the report's ``title``;
    ``on_explained`` sees every batch's explanations where the engine has them (``camlens
    demo`` scores them)."""

    echo: Callable[[str], None] = print
    advance: Callable[[int], None] | None = None
    total: Callable[[int], None] | None = None
    title: str = "camlens report"
    on_explained: Callable[[Explained], None] | None = None


@dataclass
class Outcome:
    """One batch done by an engine: ``records`` gives its rows and files (called on the writer
    thread: rendering can wait there), ``failures`` its inputs that failed, ``done`` the images
    explained, ``handled`` the inputs it took off the to-do list (progress); ``explained`` the
    batch's explanations where the engine has them in this process; ``stored`` when the engine
    wrote its rows, failure rows and files itself."""

    records: Callable[[], list[Record]]
    failures: list[Failure]
    done: int
    handled: int
    explained: Explained | None = None
    stored: bool = False  # its rows and files are in the folder already (Ray's actors wrote them)


class Engine(Protocol):
    """What differs between engines (see the module's docstring)."""

    name: str

    def inputs(self, paths: Sequence[str | os.PathLike], out: Path, labels: bool) -> Inputs: ...

    def started(self, out: Path | str, settings: RunSettings) -> AbstractContextManager[Any]: ...

    def batches(self, job: Job) -> Iterator[Outcome]: ...


def output_names(files: Sequence[Path]) -> dict[Path, str]:
    """A distinct file-name stem per input, the same for the same inputs: its own stem made safe,
    or its path below the common folder when two inputs share a stem; names that still clash
    (``a b``, ``a_b``, ``a<b``; letter case aside) get a short hash of the whole path."""
    stems = Counter(path.stem for path in files)
    root = Path(os.path.commonpath([p.parent for p in files])) if files else Path()
    wanted = {
        path: safe_name(
            path.stem if stems[path.stem] == 1 else "__".join(path.relative_to(root).parts)
        )
        for path in files
    }
    clashes = Counter(name.lower() for name in wanted.values())
    return {
        path: name if clashes[name.lower()] == 1 else f"{name}-{_digest(path)}"
        for path, name in wanted.items()
    }


def _digest(path: Path) -> str:
    return hashlib.sha256(os.fsencode(path)).hexdigest()[:8]


def safe_name(name: str) -> str:
    """``name`` with every character but letters, digits and ``-_.+`` made ``_`` ("image" if
    empty)."""
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
        "activation": settings.activation,
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
    files: Iterable[Path],
    writer: RunWriter,
    methods: Sequence[str],
    summary: Summary,
    echo: Callable[[str], None],
    total: Callable[[int], None] | None,
) -> list[Path] | Remaining:
    """The files without a row for every method in ``writer``'s run yet; the rest are counted in
    ``summary.resumed`` and said, and ``total`` is told how many are to do.

    ``files`` streamed (not a list, :class:`~camlens.runs.listing.Listing`) give a stream too:
    the files are counted in one pass and listed again as they are done."""
    todo: list[Path] | Remaining
    if isinstance(files, list):
        todo = [f for f in files if _undone(f, writer.done, methods)]
        listed = len(files)
    else:
        todo, listed = _remaining(files, writer, methods)
    summary.resumed = listed - len(todo)
    if summary.resumed:
        echo(f"resume: {summary.resumed} image(s) already in {writer.label}, {len(todo)} to do")
    if total is not None:
        total(len(todo))
    return todo


class Remaining:
    """The files of a streamed listing (``files``, listed again at each iteration) without a row
    for every method in ``done`` (the done set is not copied: iterate it before the run adds
    to it); ``count`` of them."""

    def __init__(
        self, files: Iterable[Path], done: set[tuple[str, str]], methods: Sequence[str], count: int
    ) -> None:
        self.files, self.done, self.methods, self.count = files, done, methods, count

    def __iter__(self) -> Iterator[Path]:
        return (f for f in self.files if _undone(f, self.done, self.methods))

    def __len__(self) -> int:
        return self.count


def _remaining(
    files: Iterable[Path], writer: RunWriter, methods: Sequence[str]
) -> tuple[Remaining, int]:
    """The :class:`Remaining` files of a streamed listing and how many it lists: one counting
    pass (none for a new run whose listing was counted)."""
    remaining = Remaining(files, writer.done, methods, 0)
    listed = getattr(files, "count", None)
    if listed is not None and not writer.done:
        remaining.count = listed
        return remaining, listed
    listed = 0
    for file in files:
        listed += 1
        remaining.count += _undone(file, writer.done, methods)
    return remaining, listed


def _undone(file: Path, done: set[tuple[str, str]], methods: Sequence[str]) -> bool:
    """Whether ``file`` lacks a row for one of ``methods`` in ``done``."""
    return any((path_text(file), m) not in done for m in methods)


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


def attempt(
    out: Path | None, paths: Sequence[object], explain: Callable[[], T]
) -> tuple[T | None, list[Failure]]:
    """``explain()``, or None and a failure per path when it raises one of
    :data:`EXPLAIN_ERRORS` (its traceback appended to ``out``'s log when ``out`` is given)."""
    try:
        return explain(), []
    except EXPLAIN_ERRORS as error:
        if out is not None:
            log_failure(out, paths)
        return None, failed_batch(paths, error)


def explain_decoded(
    session: Session,
    settings: RunSettings,
    batch: Batch,
    truth: Sequence[tuple[int, str | None]],
    explain: Callable[..., Explained] = explain_batch,
) -> Explained:
    """:func:`~camlens.runs.records.explain_batch` (or ``explain``) for a decoded batch with
    the run's settings; ``truth`` = each image's (class index, folder name)."""
    assert batch.unit is not None
    return explain(
        session,
        batch.unit,
        batch.paths,
        batch.images,
        settings.methods,
        target=settings.target,
        layer=settings.layer,
        precision=settings.precision,
        true_labels=[index for index, _ in truth],
        true_names=[name for _, name in truth],
        load_s=batch.load_s,
        box_threshold=settings.render.box_threshold if settings.render.boxes else None,
        activation=settings.activation,
    )


def check_target(settings: RunSettings) -> None:
    """Refuse ``--target label`` without the labels it explains."""
    if settings.target == "label" and not settings.labels_from_folders:
        raise CamlensValueError("--target label explains the true class: add --labels-from-folders")


def run(
    engine: Engine,
    session: Session,
    paths: Sequence[str | os.PathLike],
    out: Path | str,
    settings: RunSettings,
    info: dict[str, Any],
    hooks: Hooks | None = None,
) -> Summary:
    """Explain every input under ``paths`` with ``engine`` into the run folder ``out`` (a
    folder, or an object store's URI: :mod:`camlens.runs.remote`), whose manifest holds
    ``info``, telling ``hooks`` as it goes."""
    check_target(settings)
    hooks = hooks or Hooks()
    started = time.perf_counter()
    out = out if is_remote(out) else Path(out)
    found = engine.inputs(paths, local_folder(out), settings.labels_from_folders)
    summary = Summary(failures=list(found.failures), ignored=found.ignored)
    _say(found.failures, hooks.echo)
    if found.ignored:
        hooks.echo(f"{found.ignored} non-image file(s) ignored")
    require_labels(found.classes, settings.target)
    indices = class_indices(
        list(found.classes.values()), session.names, session.classes, settings.class_map,
        hooks.echo,
    )  # fmt: skip
    with engine.started(out, settings):
        writer = open_writer(out, info, settings.resume, settings.overwrite)
        with _Writing(writer, hooks.title, summary) as writing:  # finishes however the run ends
            todo = to_do(found.files, writer, settings.methods, summary, hooks.echo, hooks.total)
            # a streamed listing (Ray) gives a Remaining, listed again as the engine feeds it
            job = Job(
                cast(list[Path], todo), found.files, writer.out, session, settings, writer,
                found.classes, indices,
            )  # fmt: skip
            _loop(engine, job, writing, hooks)
    summary.seconds = time.perf_counter() - started
    return summary


def _say(failures: Sequence[Failure], echo: Callable[[str], None]) -> None:
    for failure in failures:
        echo(f"failed: {failure.path}: {failure.reason}")


def _loop(
    engine: Engine,
    job: Job,
    writing: _Writing,
    hooks: Hooks,
) -> None:
    """Every batch of ``engine``: said, counted, handed to the writer thread."""
    summary = writing.summary
    if summary.failures:
        writing.submit(list, list(summary.failures))
    batches = engine.batches(job)
    try:
        _batches(batches, writing, hooks)
    finally:  # an engine's generator is closed however the run ends (Ray's actors stop)
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    writing.complete = True


def _batches(batches: Iterator[Outcome], writing: _Writing, hooks: Hooks) -> None:
    """Each outcome said, counted and handed to the writer thread."""
    summary = writing.summary
    for outcome in batches:
        _say(outcome.failures, hooks.echo)
        summary.failures += outcome.failures
        summary.done += outcome.done
        if outcome.explained is not None and hooks.on_explained is not None:
            hooks.on_explained(outcome.explained)
        if not outcome.stored:
            writing.submit(outcome.records, outcome.failures)
        if hooks.advance is not None:
            hooks.advance(outcome.handled)


class _Writing:
    """The writer thread of a run: at most two batches behind, every batch handed to it written
    before the run finishes; on leaving, the writer finishes (``complete`` when the loop ended
    and every write succeeded) and a failed write is raised."""

    def __init__(self, writer: RunWriter, title: str, summary: Summary) -> None:
        self.writer, self.title, self.summary = writer, title, summary
        self.pending: list[Future] = []
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="camlens-write")
        self.complete = False

    def __enter__(self) -> _Writing:
        return self

    def submit(self, records: Callable[[], list[Record]], failures: list[Failure]) -> None:
        while len(self.pending) >= 2:  # backpressure: the writer is at most two batches behind
            self.pending.pop(0).result()
        self.pending.append(self.pool.submit(lambda: self.writer.write(records(), failures)))

    def __exit__(self, *exc: object) -> None:
        failed: BaseException | None = None
        for job in self.pending:  # every batch handed to the writer is written before finishing
            try:
                job.result()
            except BaseException as error:  # noqa: BLE001  (raised below, after finishing)
                failed = failed or error
        self.pool.shutdown()
        self.summary.rows = self.writer.finish(self.title, self.complete and failed is None)
        if failed is not None and exc[0] is None:
            raise failed


def nothing(out: Path | str, settings: RunSettings) -> AbstractContextManager[Any]:
    """:meth:`Engine.started` of an engine that needs nothing up around a run."""
    return contextlib.nullcontext()
