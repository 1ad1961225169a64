"""How many images a forward pass takes: chosen from a GPU's free memory (``--batch-size auto``),
and halved when a batch runs out of it.

:func:`choose_batch` reads ``--batch-size``: a number, or ``auto``, which on the CPU is
:data:`CPU_BATCH` (the command line's default before ``auto`` existed) and on a CUDA device is
measured: one batch of :data:`PROBE` blank images explained with the run's methods gives the
peak memory per image (``torch.cuda.max_memory_allocated``), and the batch is the largest power
of two whose images fit in :data:`MARGIN` of the free memory (``torch.cuda.mem_get_info``, plus
what torch's allocator holds unused), at most :data:`MAX_BATCH`.

:class:`Fitting` explains a decoded batch, and when it runs out of GPU memory
(``torch.cuda.OutOfMemoryError``) halves it and explains the halves, down to one image (whose
failure is then a failure row, as any other); the batches that follow are cut to the size that
fitted, so the run does not meet the same error at every batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camlens.errors import CamlensValueError
from camlens.images.decode import Batch, Failure
from camlens.runs.pipeline import (
    EXPLAIN_ERRORS,
    RunSettings,
    explain_decoded,
    failed_batch,
    log_failure,
)
from camlens.runs.records import Explained, explain_batch
from camlens.runs.session import Session

#: ``--batch-size auto`` on the CPU (and any device but CUDA).
CPU_BATCH = 8
#: ``--batch-size auto`` for Ray actors with GPUs (the driver, on its CPU, cannot measure their
#: memory; an actor halves a batch that does not fit).
GPU_ACTOR_BATCH = 64
#: ``--batch-size auto`` on a GPU: at most this many images...
MAX_BATCH = 256
#: ...whose measured peak fits in this fraction of the free memory...
MARGIN = 0.8
#: ...measured on a batch of this many blank images.
PROBE = 2


def batch_word(value: int | str) -> int | str:
    """``--batch-size`` checked: a positive number (an int or its text), or ``"auto"``."""
    if value == "auto":
        return "auto"
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise CamlensValueError(
            f"--batch-size must be a positive number of images or auto, got {value!r}"
        )
    return int(text)


def batch_from_memory(free: float, per_image: float, cap: int = MAX_BATCH) -> int:
    """The largest power of two at most ``cap`` and ``MARGIN * free / per_image`` (bytes), at
    least 1."""
    fits = min(cap, int(MARGIN * free / max(per_image, 1.0)))
    return 1 << (max(fits, 1).bit_length() - 1)


def measured_batch(device: torch.device, probe: Callable[[int], object]) -> int:
    """The batch for the CUDA ``device``: ``probe(PROBE)`` (explain that many images) run with
    the peak memory counted from here, extrapolated per image into the free memory (1 when the
    probe itself runs out of memory)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    try:
        probe(PROBE)
    except torch.cuda.OutOfMemoryError:
        _release()
        return 1
    torch.cuda.synchronize(device)
    per_image = (torch.cuda.max_memory_allocated(device) - before) / PROBE
    free = torch.cuda.mem_get_info(device)[0]
    idle = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return batch_from_memory(free + idle, per_image)


def choose_batch(
    value: int | str,
    session: Session,
    methods: Sequence[str],
    layer: Any = "auto",
    precision: str = "auto",
    explain: Callable[..., Explained] | None = None,
    gpu_actors: bool = False,
) -> int:
    """``--batch-size`` as a number of images: a number as given; ``auto``,
    :data:`GPU_ACTOR_BATCH` for Ray actors with GPUs (``gpu_actors``), :data:`CPU_BATCH` off
    CUDA, else :func:`measured_batch` with ``methods`` (``explain``:
    :func:`~camlens.runs.records.explain_batch` by default) on blank images."""
    word = batch_word(value)
    if isinstance(word, int):
        return word
    if gpu_actors:
        return GPU_ACTOR_BATCH
    if session.device.type != "cuda":
        return CPU_BATCH
    run = explain or explain_batch

    def probe(count: int) -> object:
        blank = torch.zeros(count, 3, session.size, session.size)
        paths = [Path(f"probe-{i}") for i in range(count)]
        images = [np.zeros((session.size, session.size, 3), np.uint8)] * count
        return run(session, blank, paths, images, methods, layer=layer, precision=precision)

    return measured_batch(session.device, probe)


@dataclass
class Piece:
    """A part of a decoded batch explained (``explained``) or failed (``failures``)."""

    batch: Batch
    explained: Explained | None
    failures: list[Failure]


def _cut(batch: Batch, truth: list, size: int) -> list[tuple[Batch, list]]:
    """``batch`` (and each image's ``truth``) in pieces of at most ``size`` images."""
    assert batch.unit is not None
    count = len(batch.paths)
    return [
        (
            Batch(
                batch.paths[i : i + size],
                batch.images[i : i + size],
                batch.unit[i : i + size],
                load_s=batch.load_s * min(size, count - i) / count,
            ),
            truth[i : i + size],
        )  # fmt: skip
        for i in range(0, count, size)
    ]


class Fitting:
    """Explains decoded batches of a run, halving a batch that runs out of GPU memory; ``limit``
    is the largest size that fitted since (None: no batch ran out)."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.limit: int | None = None

    def __call__(
        self,
        session: Session,
        settings: RunSettings,
        batch: Batch,
        truth: list,
        explain: Callable[..., Explained],
    ) -> Iterator[Piece]:
        """Each piece of ``batch`` as it is explained (:func:`explain_decoded` with
        ``explain``); a piece that fails for another reason fails its images (its traceback in
        the run's log)."""
        pending = _cut(batch, truth, self.limit or len(batch.paths))
        while pending:
            piece, known = pending.pop(0)
            done = self._one(session, settings, piece, known, explain, pending)
            if done is not None:
                yield done

    def _one(
        self,
        session: Session,
        settings: RunSettings,
        piece: Batch,
        known: list,
        explain: Callable[..., Explained],
        pending: list[tuple[Batch, list]],
    ) -> Piece | None:
        """``piece`` explained or failed; None when it ran out of memory and its halves were put
        first in ``pending``."""
        try:
            explained = explain_decoded(session, settings, piece, known, explain)
        except torch.cuda.OutOfMemoryError as error:
            if len(piece.paths) == 1:
                return self._failed(piece, error)
            _release()
            self.limit = (len(piece.paths) + 1) // 2
            pending[:0] = _cut(piece, known, self.limit)
            return None
        except EXPLAIN_ERRORS as error:
            return self._failed(piece, error)
        return Piece(piece, explained, explained.failures)

    def _failed(self, piece: Batch, error: BaseException) -> Piece:
        """A failure per image of ``piece`` (called while ``error`` is handled: its traceback
        goes to the run's log)."""
        if self.out is not None:
            log_failure(self.out, piece.paths)
        return Piece(piece, None, failed_batch(piece.paths, error))


def _release() -> None:
    """The memory torch's allocator holds unused given back to the GPU."""
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
