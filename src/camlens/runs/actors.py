"""The Ray engine's two stages, run on the cluster's nodes (see :mod:`camlens.runs.distributed`).

1. :func:`decode_rows`, CPU tasks (``--decoders``): read and decode a batch of files
   (:func:`camlens.images.decode.decode`, the one decoder) into each image and its model input.
2. :class:`Worker`, the model actors (``--workers``, ``--gpus-per-worker``): explain the decoded
   batch, render its rows and files (:func:`camlens.runs.records.render`, as the local engine
   does) and write them straight into the run folder (:class:`~camlens.runs.store.Store`): the
   maps, the overlays, and the batch's rows as one Parquet part. Model actors never decode.

The driver receives only a :class:`Delivered` per batch: the (path, method) pairs written, the
failures, the part's name and who wrote it; no image bytes (a few hundred bytes per image).
"""

from __future__ import annotations

import os
import pickle
import socket
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from camlens.backends.locks import model_lock
from camlens.images.decode import Batch, Failure, decode
from camlens.runs import row
from camlens.runs.folder import PARTS
from camlens.runs.objects import as_path, read_object
from camlens.runs.pipeline import EXPLAIN_ERRORS, RunSettings, explain_decoded, failed_batch
from camlens.runs.records import Record, render
from camlens.runs.session import Session
from camlens.runs.store import Store


@dataclass
class Trace:
    """The traceback of a batch an actor failed to explain, for the driver's run log."""

    paths: list[str]
    text: str


@dataclass
class Delivered:
    """What an actor sends the driver for one batch: the (path, method) pairs whose rows and files
    it wrote, its failures (also written as failure rows), tracebacks, the part's name, and
    where it ran (``host``, ``pid``, ``node``; the decoding tasks' ``decoders`` pids) and the
    ``seconds`` it took."""

    done: list[tuple[str, str]]
    failures: list[Failure]
    traces: list[Trace] = field(default_factory=list)
    part: str | None = None
    host: str = ""
    pid: int = 0
    node: str = ""
    decoders: list[int] = field(default_factory=list)
    seconds: float = 0.0  # the actor's time on the batch: explaining, rendering, writing


def path_texts(batch: dict[str, np.ndarray]) -> list[str]:
    """The batch's paths as text: a spooled to-do list holds them as bytes
    (:func:`os.fsencode`, any encoding), a listed one as text."""
    return [os.fsdecode(p) if isinstance(p, bytes) else str(p) for p in batch["path"]]


def decode_rows(batch: dict[str, np.ndarray], size: int) -> dict[str, Any]:
    """The decoding stage: ``batch`` (columns ``path``...) with each file's decoded image and
    model input (pickled: ``image``, ``unit``), or its failure's reason (``error``), the
    seconds spent per image (``load_s``) and this process's id (``decoder``)."""
    texts = path_texts(batch)
    decoded = decode([as_path(t) for t in texts], size, read=read_object)
    reasons = {f.path: f.reason for f in decoded.failures}
    good = {str(p): i for i, p in enumerate(decoded.paths)}
    unit = decoded.unit
    assert unit is not None or not good
    images, units = [], []
    for text in texts:
        i = good.get(text)
        images.append(b"" if i is None else pickle.dumps(decoded.images[i]))
        units.append(b"" if i is None or unit is None else pickle.dumps(unit[i].numpy()))
    share = decoded.load_s / max(len(texts), 1)
    return dict(
        batch,
        image=images,
        unit=units,
        error=[reasons.get(t, "") for t in texts],
        load_s=[share] * len(texts),
        decoder=[os.getpid()] * len(texts),
    )


class Worker:
    """A model actor: one session built in ``__init__`` around the driver's model, received
    through Ray's object store (``model``, a reference from :func:`ship`), or loaded from the
    spec where the driver could not ship it (random weights: the spec's seed), or given
    (``session``);
    ``__call__`` explains a decoded batch, writes its files and part through ``store`` (part
    names ``part-<run>-<first index>-<token>.parquet``, ``run`` the number the driver reserved)
    and returns one pickled :class:`Delivered` (column ``delivered``).

    Two calls run at once in an actor, as the local engine's stages do: while one batch holds
    the model (its :func:`~camlens.backends.locks.model_lock`), the other renders or writes."""

    def __init__(
        self,
        spec: dict[str, Any],
        settings: RunSettings,
        store: Store,
        run: int = 0,
        session: Session | None = None,
        model: Any = None,
    ) -> None:
        self.session = session or Session.from_spec(**spec, network=_received(model))
        self.settings, self.store, self.run = settings, store, run

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[bytes]]:
        begin = time.perf_counter()
        texts = path_texts(batch)
        errors = [str(e) for e in batch["error"]]
        failed = [Failure(t, e) for t, e in zip(texts, errors) if e]
        good = [i for i, e in enumerate(errors) if not e]
        records: list[Record] = []
        traces: list[Trace] = []
        if good:
            records, more, traces = self._explain(batch, good)
            failed += more
        for record in records:
            for name, data in record.files.items():
                self.store.write(name, data)
        part = self._write_part(records, failed, int(np.min(batch["index"])))
        delivered = Delivered(
            [(r.row["path"], r.row["method"]) for r in records], failed, traces, part,
            socket.gethostname(), os.getpid(), _node(), sorted({int(p) for p in batch["decoder"]}),
            time.perf_counter() - begin,
        )  # fmt: skip
        return {"delivered": [pickle.dumps(delivered)]}

    def _explain(
        self, batch: dict[str, np.ndarray], good: list[int]
    ) -> tuple[list[Record], list[Failure], list[Trace]]:
        """Records of the decoded rows ``good`` of ``batch``, the failures, the traceback."""
        settings, session = self.settings, self.session
        every = path_texts(batch)
        paths = [as_path(every[i]) for i in good]
        images = [pickle.loads(batch["image"][i]) for i in good]
        unit = torch.from_numpy(np.stack([pickle.loads(batch["unit"][i]) for i in good]))
        decoded = Batch(paths, images, unit, load_s=float(np.asarray(batch["load_s"])[good].sum()))
        truth = [(int(batch["true_label"][i]), str(batch["true_name"][i]) or None) for i in good]
        try:
            with model_lock(session.model):
                explained = explain_decoded(session, settings, decoded, truth)
        except EXPLAIN_ERRORS as error:
            if isinstance(error, torch.cuda.OutOfMemoryError) and len(good) > 1:
                return self._halves(batch, good)  # out of GPU memory: halved, not failed
            trace = Trace([str(p) for p in paths], traceback.format_exc())
            return [], failed_batch(paths, error), [trace]
        kept = {str(p) for p in explained.paths}
        stems = [str(batch["stem"][i]) for i in good if every[i] in kept]
        return render(explained, stems, session, settings.render), explained.failures, []

    def _halves(
        self, batch: dict[str, np.ndarray], good: list[int]
    ) -> tuple[list[Record], list[Failure], list[Trace]]:
        """:meth:`_explain` of each half of ``good``, put together."""
        half = (len(good) + 1) // 2
        first, second = self._explain(batch, good[:half]), self._explain(batch, good[half:])
        return first[0] + second[0], first[1] + second[1], first[2] + second[2]

    def _write_part(self, records: list[Record], failed: list[Failure], first: int) -> str | None:
        """The batch's rows (then its failure rows) as one Parquet part; its name."""
        rows = [r.row for r in records] + [row.failure_row(f.path, f.reason) for f in failed]
        if not rows:
            return None
        name = f"part-{self.run:06d}-{first:010d}-{uuid.uuid4().hex[:8]}.parquet"
        self.store.write_part(PARTS, name, row.table(rows))
        return name


def ship(model: Any) -> Any:
    """The driver's loaded model put once in Ray's object store, for every actor to read (no
    actor loads the spec again, reads the weights file, or needs it on its node); None where
    the model cannot travel (not a torch module, TorchScript, or it cannot be pickled): the
    actors then load the spec."""
    import ray

    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
        return None
    try:
        return ray.put(model)
    except (TypeError, AttributeError, RuntimeError, pickle.PicklingError):
        return None


def _received(model: Any) -> Any:
    """The model behind the reference :func:`ship` made (None: none was shipped)."""
    if model is None:
        return None
    import ray

    return ray.get(model)


def _node() -> str:
    """The Ray node this process runs on ("" outside Ray)."""
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else ""
    except ImportError:  # pragma: no cover - Ray is installed wherever actors run
        return ""
