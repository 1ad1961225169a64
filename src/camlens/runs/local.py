"""The local engine: a folder of images through a session into a run folder, at the model's speed.

Three stages run side by side so that the model never waits: decoding threads read and resize
the next batches (:func:`camlens.images.decode.stream`), the calling thread runs the model
(:func:`camlens.runs.records.explain_batch`), and one writer thread renders overlays, encodes maps
and writes rows (:func:`camlens.runs.records.render`, :class:`camlens.runs.writer.RunWriter`). Each
stage holds at most a couple of batches, so memory stays flat in the number of images. A file that
cannot be decoded, or a batch the model rejects, becomes failure rows and the run goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

from camlens.images.decode import Failure, collect, decode, folder_labels, stream
from camlens.runs.memory import Fitting
from camlens.runs.pipeline import (
    EXPLAIN_ERRORS,
    Hooks,
    Inputs,
    Job,
    Outcome,
    RunSettings,
    Summary,
    failed_batch,
    log_failure,
    manifest,
    nothing,
    output_names,
    run,
    to_do,
)
from camlens.runs.records import Explained, explain_batch, render
from camlens.runs.session import Session

__all__ = [
    "EXPLAIN_ERRORS",
    "Failure",
    "LocalEngine",
    "RunSettings",
    "Summary",
    "explain_files",
    "failed_batch",
    "local_inputs",
    "log_failure",
    "manifest",
    "output_names",
    "to_do",
]


def local_inputs(paths: Sequence[str | os.PathLike], out: Path, labels: bool) -> Inputs:
    """Files, folders and globs on this machine (:func:`~camlens.images.decode.collect`), the
    run folder left out; with ``labels``, each file's class folder."""
    files, failures, ignored = collect(paths, exclude=out)
    classes = {str(k): v for k, v in folder_labels(files, paths).items()} if labels else {}
    return Inputs(files, failures, ignored, classes)


class LocalEngine:
    """Decoding threads, the model in the calling thread, rendering on the writer thread."""

    name = "local"
    inputs = staticmethod(local_inputs)
    started = staticmethod(nothing)

    def batches(self, job: Job) -> Iterator[Outcome]:
        session, settings = job.session, job.settings
        stems = output_names(job.files)
        fitting = Fitting(job.out)  # a batch that runs out of GPU memory is halved
        read = partial(decode, device=session.device)  # JPEGs decoded on a GPU where it can
        for batch in stream(
            job.todo, settings.batch_size, session.size, settings.decoders, read=read
        ):
            failed, handled = list(batch.failures), len(batch.failures)
            if batch.unit is None:
                yield Outcome(list, failed, 0, handled)
                continue
            truth = [job.label(p) for p in batch.paths]
            # explain_batch and render are looked up here, when called: tests replace them
            for piece in fitting(session, settings, batch, truth, explain_batch):
                explained = piece.explained
                yield Outcome(
                    _rendering(explained, stems, session, settings),
                    failed + piece.failures,
                    len(explained.paths) if explained is not None else 0,
                    handled + len(piece.batch.paths),
                    explained,
                )
                failed, handled = [], 0


def _rendering(
    explained: Explained | None, stems: dict[Path, str], session: Session, settings: RunSettings
) -> Callable[[], list]:
    """The records of ``explained``, rendered when called (on the writer thread)."""
    if explained is None:
        return list
    return lambda: render(explained, [stems[p] for p in explained.paths], session, settings.render)


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
    """The local engine's run: explain every image under ``paths`` with ``session`` into the run
    folder ``out`` (:func:`camlens.runs.pipeline.run` with :class:`LocalEngine`).

    ``total(n)`` is told how many images are to do, ``advance(k)`` after every batch;
    ``on_explained`` sees every batch's explanations (``camlens demo`` scores them).
    """
    info = manifest(session, settings)
    hooks = Hooks(echo, advance, total, title, on_explained)
    return run(LocalEngine(), session, paths, out, settings, info, hooks)
