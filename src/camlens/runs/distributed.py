"""The Ray engine: the same run folder as the local engine, explained by a pool of Ray actors.

Ray Data's batch-inference pattern around the app layer, not a scheduler of ours: the driver lists
the inputs (local files, folders and globs, or ``s3://``/``gs://``/``file://`` prefixes and globs
through pyarrow's file systems), skips what a resumed run has done, and hands the paths to
``map_batches`` over an actor pool. Each actor builds the :class:`~camlens.runs.session.Session`
from the model spec once, then per batch decodes its files (:func:`camlens.images.decode.decode`),
explains them (:func:`camlens.runs.records.explain_batch`) and renders rows and files
(:func:`camlens.runs.records.render`), exactly as the local engine does. The driver writes what
comes back through the same :class:`~camlens.runs.writer.RunWriter`, so ``camlens.load_run``, the
report and ``--resume`` work unchanged (``"engine": "ray"`` in ``run.json``).

Nothing lost, nothing twice: Ray restarts an actor that dies and retries the batch it held
(Ray Data's actor pools default to unlimited ``max_restarts`` and ``max_task_retries``); the
driver keeps one row per image and method, whichever attempt delivered it. Ray is imported only
here and only when a run starts (``pip install "camlens[ray]"``).
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import pickle
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, cast

import numpy as np

from camlens.backends.locks import model_lock
from camlens.errors import CamlensValueError
from camlens.images.decode import Failure, decode, read_image
from camlens.runs.local import local_inputs
from camlens.runs.pipeline import (
    EXPLAIN_ERRORS,
    Hooks,
    Inputs,
    Job,
    Outcome,
    RunSettings,
    Summary,
    check_target,
    explain_decoded,
    failed_batch,
    log_failure,
    manifest,
    output_names,
    run,
)
from camlens.runs.records import RenderOptions, render
from camlens.runs.session import Session
from camlens.runs.settings import ExplainSettings, ModelSettings
from camlens.runs.writer import claim

#: Batches in flight in one actor: one in the model, one decoding or rendering beside it.
CALLS = 2
#: URI schemes read through pyarrow's file systems.
SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "file://")


@dataclass
class Cluster:
    """Where and how wide a run goes: ``address`` None (start Ray on this machine's cores),
    ``"auto"`` (the cluster this machine belongs to) or ``"ray://HOST:PORT"``; ``workers`` actors,
    each with ``gpus_per_worker`` GPUs (0: CPU actors) and ``cpus_per_worker`` CPUs; the device
    each actor's session uses (``auto``: its GPU when it has one)."""

    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    device: str = "auto"

    def check(self) -> None:
        """Raise a CamlensError for a setting that cannot work, before Ray starts."""
        import importlib.util

        import torch

        if importlib.util.find_spec("ray") is None:
            raise CamlensValueError(
                '--engine ray needs Ray Data, which is not installed: pip install "camlens[ray]"'
            )
        if self.workers < 1:
            raise CamlensValueError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise CamlensValueError(
                f"--gpus-per-worker must be 0 (CPU actors) or more, got {self.gpus_per_worker:g}"
            )
        if self.cpus_per_worker <= 0:
            raise CamlensValueError(
                f"cpus_per_worker must be positive, got {self.cpus_per_worker:g}"
            )
        if self.address is not None and not (
            self.address == "auto" or self.address.startswith("ray://") or ":" in self.address
        ):
            raise CamlensValueError(
                f"--address must be auto, ray://HOST:PORT or HOST:PORT, got {self.address!r}"
            )
        try:
            torch.device(self.device) if self.device != "auto" else None
        except RuntimeError as error:
            raise CamlensValueError(
                f"--device {self.device!r} is not a device name; expected auto, cpu, cuda..."
            ) from error
        if self.address is None and self.gpus_per_worker > 0 and not torch.cuda.is_available():
            raise CamlensValueError(
                f"--gpus-per-worker {self.gpus_per_worker:g} asks for GPUs, but this machine has "
                "none; pass --address of a cluster with GPUs, or --gpus-per-worker 0"
            )


def start(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to Ray (``address``) or start it on this machine (``num_cpus`` cores, all by
    default); True when this call started or joined it, False when Ray was already up.

    A local Ray's workers import the same camlens as this process (its folder goes first on their
    ``PYTHONPATH``); on a cluster, camlens must be installed on every node.
    """
    import ray

    if ray.is_initialized():
        return False
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if address is None:
        root = str(Path(__file__).resolve().parents[2])  # src/, above camlens/
        paths = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        options["num_cpus"] = num_cpus
        options["_node_ip_address"] = "127.0.0.1"  # a local Ray listens on loopback only
        options["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}
    ray.init(address=address, **options)
    return True


def _is_uri(text: str) -> bool:
    return text.startswith(SCHEMES)


class ObjectPath(str):
    """An object-storage URI standing in for a :class:`~pathlib.Path` in rows and files: its
    text is the URI; ``name``, ``stem`` and ``suffix`` as a path's; ``read_bytes`` reads it."""

    @property
    def name(self) -> str:
        return self.rstrip("/").rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    def read_bytes(self) -> bytes:
        from pyarrow import fs

        system, where = fs.FileSystem.from_uri(str(self))
        with system.open_input_stream(where) as stream:
            return bytes(stream.read())


def read_object(path: Path, size: int | None = None) -> np.ndarray:
    """:func:`~camlens.images.decode.read_image` for a local path or an :class:`ObjectPath`."""
    if not isinstance(path, ObjectPath):
        return read_image(path, size)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot be read ({error})") from error
    return read_image(data, size)


def list_uris(uris: Sequence[str]) -> tuple[list[ObjectPath], list[Failure], dict[str, str]]:
    """Expand object-storage URIs (a file, a prefix listed recursively, or a glob) into files, in
    order; returns ``(files, failures, classes)``, ``classes`` the first folder of each file below
    the prefix (or the fixed part of the glob) it was found under."""
    from pyarrow import fs

    files: list[ObjectPath] = []
    failures: list[Failure] = []
    classes: dict[str, str] = {}
    seen: set[str] = set()
    for uri in uris:
        scheme = uri[: uri.index("://") + 3]
        parts = uri[len(scheme) :].split("/")
        wild = [i for i, part in enumerate(parts) if any(c in part for c in "*?[")]
        pattern, fixed = bool(wild), parts[: wild[0]] if wild else parts
        try:
            system, root = fs.FileSystem.from_uri(scheme + "/".join(fixed))
            info = system.get_file_info(root)
            if info.type == fs.FileType.File and not pattern:
                found = [root]
            elif info.type == fs.FileType.Directory:
                listed = system.get_file_info(fs.FileSelector(root, recursive=True))
                found = sorted(
                    i.path
                    for i in listed
                    if i.type == fs.FileType.File
                    and not any(p.startswith(".") for p in i.path[len(root) :].split("/") if p)
                )
            else:
                found = []
        except (OSError, ValueError) as error:
            failures.append(Failure(uri, f"cannot be listed ({error})"))
            continue
        base = scheme + root
        full = [scheme + f for f in found]
        if pattern:
            full = [f for f in full if fnmatch.fnmatchcase(f, uri)]
        if not full:
            reason = "no file matches this pattern" if pattern else "no such file or folder"
            failures.append(Failure(uri, reason))
        for name in full:
            if name not in seen:
                seen.add(name)
                files.append(ObjectPath(name))
                below = name[len(base) :].strip("/").split("/")
                if len(below) > 1:
                    classes[name] = below[0]
    return files, failures, classes


def _names(files: Sequence[Path]) -> dict[str, str]:
    """:func:`~camlens.runs.local.output_names` for local paths and URIs alike."""
    keyed = {PurePosixPath("/" + str(f).split("://", 1)[-1].lstrip("/")): str(f) for f in files}
    stems = output_names(cast(Sequence[Path], list(keyed)))
    return {keyed[cast(PurePosixPath, k)]: v for k, v in stems.items()}


@dataclass
class Trace:
    """The traceback of a batch an actor failed to explain, for the driver's run log."""

    paths: list[str]
    text: str


class Worker:
    """A Ray Data actor: one session built from the spec in ``__init__``; ``__call__`` decodes,
    explains and renders a batch of paths into pickled :class:`~camlens.runs.records.Record` s and
    :class:`~camlens.images.decode.Failure` s (column ``item``), and a :class:`Trace` per batch
    that failed, which the driver appends to the run's log.

    Two calls run at once in an actor (:data:`CALLS`), as the local engine's stages do: while one
    batch holds the model (its :func:`~camlens.backends.locks.model_lock`, for the whole batch),
    the other decodes or renders."""

    def __init__(self, spec: dict[str, Any], settings: RunSettings) -> None:
        self.session = Session.from_spec(**spec)  # random weights: the spec's seed, the driver's
        self.settings = settings

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[bytes]]:
        settings, session = self.settings, self.session
        texts = [str(p) for p in batch["path"]]
        paths = [cast(Path, ObjectPath(t)) if _is_uri(t) else Path(t) for t in texts]
        decoded = decode(paths, session.size, read=read_object)
        failed = list(decoded.failures)
        items: list[Any] = []
        if decoded.unit is not None:
            where = [texts.index(str(p)) for p in decoded.paths]
            truth = [(int(batch["true_label"][i]), batch["true_name"][i] or None) for i in where]
            try:
                with model_lock(session.model):
                    explained = explain_decoded(session, settings, decoded, truth)
            except EXPLAIN_ERRORS as error:
                failed += failed_batch(decoded.paths, error)
                items.append(Trace([str(p) for p in decoded.paths], traceback.format_exc()))
            else:
                failed += explained.failures
                kept = {str(p) for p in explained.paths}
                stems = [str(batch["stem"][i]) for i in where if texts[i] in kept]
                items += render(explained, stems, session, settings.render)
        return {"item": [pickle.dumps(item) for item in items + failed]}


class RayEngine:
    """A pool of Ray Data actors decodes, explains and renders (:class:`Worker`); the driver
    lists local files and object-storage URIs, and writes what comes back, once per image and
    method."""

    name = "ray"

    def __init__(self, spec: dict[str, Any], cluster: Cluster) -> None:
        self.spec, self.cluster = spec, cluster

    def inputs(self, paths: Sequence[str | os.PathLike], out: Path, labels: bool) -> Inputs:
        texts = [os.fspath(p) for p in paths]
        found = local_inputs([t for t in texts if not _is_uri(t)], out, labels)
        objects, listing, object_classes = list_uris([t for t in texts if _is_uri(t)])
        classes = found.classes | object_classes if labels else {}
        files = [*found.files, *cast(list[Path], objects)]
        return Inputs(files, found.failures + listing, found.ignored, classes)

    @contextlib.contextmanager
    def started(self, out: Path, settings: RunSettings) -> Iterator[None]:
        """Ray up (started here, or joined) for the run, after the folder is checked."""
        claim(out, resume=settings.resume, overwrite=settings.overwrite)  # before Ray starts
        begun = start(self.cluster.address)
        try:  # Ray stops (if this run started it) however the run ends
            _check_resources(self.cluster)
            yield
        finally:
            if begun:
                import ray

                ray.shutdown()

    def batches(self, job: Job) -> Iterator[Outcome]:
        stems = _names(job.files)
        rows = [
            {"path": str(f), "stem": stems[str(f)], "true_name": job.classes.get(str(f), ""),
             "true_label": job.label(f)[0]}
            for f in job.todo
        ]  # fmt: skip
        if not rows:
            return
        for items in _run(rows, self.spec, job.settings, self.cluster):
            for trace in [item for item in items if isinstance(item, Trace)]:
                log_failure(job.out, trace.paths, trace.text)
            records, failed = _unique(items, job.writer.done)
            job.writer.done |= {(r.row["path"], r.row["method"]) for r in records}
            job.writer.done |= {(f.path, "") for f in failed}
            explained = {r.row["path"] for r in records}
            handled = len(explained | {f.path for f in failed})
            yield Outcome(partial(list, records), failed, len(explained), handled)


def explain_files(
    session: Session,
    spec: dict[str, Any],
    paths: Sequence[str | os.PathLike],
    out: Path,
    settings: RunSettings,
    cluster: Cluster,
    *,
    echo: Callable[[str], None] = print,
    advance: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
    title: str = "camlens report",
) -> Summary:
    """The Ray engine's run: explain every image under ``paths`` into the run folder ``out`` on
    Ray (:func:`camlens.runs.pipeline.run` with :class:`RayEngine`).

    ``session`` is the driver's (checks, the manifest); ``spec`` the keyword arguments of
    :meth:`Session.from_spec` each actor builds its own from (its ``device`` is the cluster's).
    """
    check_target(settings)
    cluster.check()
    spec = dict(spec, labels=session.names)  # the driver's class names: no file needed on nodes
    info = manifest(session, settings, engine="ray")
    hooks = Hooks(echo, advance, total, title)
    return run(RayEngine(spec, cluster), session, paths, out, settings, info, hooks)


def _unique(items: Iterable[Any], done: set[tuple[str, str]]) -> tuple[list[Any], list[Failure]]:
    """Records and failures not delivered before (a retried batch can arrive twice)."""
    records, failed = [], []
    seen: set[tuple[Any, ...]] = set()  # several targets per image: a row per class, once
    for item in items:
        if isinstance(item, Trace):
            continue
        if isinstance(item, Failure):
            if (item.path, "") not in done:
                failed.append(item)
            continue
        key = (item.row["path"], item.row["method"], item.row["target"])
        if (item.row["path"], item.row["method"]) not in done and key not in seen:
            seen.add(key)
            records.append(item)
    return records, failed


def _check_resources(cluster: Cluster) -> None:
    """Refuse a pool the cluster cannot place (Ray would wait for it for ever)."""
    import ray

    have = ray.cluster_resources()
    gpus, cpus = float(have.get("GPU", 0)), float(have.get("CPU", 0))
    if cluster.gpus_per_worker > 0 and gpus < cluster.gpus_per_worker:
        raise CamlensValueError(
            f"--gpus-per-worker {cluster.gpus_per_worker:g}: the Ray cluster has {gpus:g} GPU(s)"
        )
    if cluster.gpus_per_worker == 0 and cpus < cluster.cpus_per_worker:
        raise CamlensValueError(
            f"a worker needs {cluster.cpus_per_worker:g} CPU(s): the Ray cluster has {cpus:g}"
        )


def _run(
    rows: list[dict[str, Any]],
    spec: dict[str, Any],
    settings: RunSettings,
    cluster: Cluster,
) -> Iterable[list[Any]]:
    """Every output block of the actor pool, as unpickled records and failures."""
    import ray

    context = ray.data.DataContext.get_current()
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # camlens shows its own progress
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    blocks = max(1, -(-len(rows) // settings.batch_size))
    dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    actors = dict(spec, device=cluster.device)
    explained = dataset.map_batches(
        Worker,
        batch_size=settings.batch_size,
        compute=ray.data.ActorPoolStrategy(
            size=cluster.workers,
            max_concurrent_calls_per_actor=CALLS,
            enable_true_multi_threading=True,
        ),
        fn_constructor_kwargs={"spec": actors, "settings": settings},
        num_cpus=cluster.cpus_per_worker,
        num_gpus=cluster.gpus_per_worker or None,
        batch_format="numpy",
    )
    for block in explained.iter_batches(batch_size=None, batch_format="pyarrow"):
        block = cast(Any, block)
        yield [pickle.loads(data) for data in block.column("item").to_pylist()]


def explain(
    paths: Any,
    *,
    model: str,
    out: str | os.PathLike,
    methods: str | Sequence[str] = "gradcam",
    weights: str | None = None,
    labels: Any = None,
    size: int | None = None,
    preprocess: str = "auto",
    target: int | str | None = None,
    activation: str | None = None,
    layer: Any = "auto",
    precision: str = "auto",
    batch_size: int = 16,
    render: RenderOptions | None = None,
    resume: bool = False,
    labels_from_folders: bool = False,
    address: str | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    device: str = "auto",
    trust_pickle: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
) -> Summary:
    """``camlens explain --engine ray`` from Python: explain ``paths`` (files, folders, globs,
    ``s3://``/``gs://`` prefixes, or a Ray Dataset with a ``path`` column) with the model ``model``
    into the run folder ``out``; returns the run's :class:`~camlens.runs.local.Summary`.

    >>> camlens.runs.distributed.explain(["val/"], model="torchvision:resnet50",
    ...                             methods=["gradcam", "cam"], out="out/", workers=4)
    """
    if hasattr(paths, "select_columns") and hasattr(paths, "iter_rows"):  # a Ray Dataset
        if "path" not in paths.columns():
            raise CamlensValueError(
                f"paths: a Ray Dataset needs a 'path' column, got columns {paths.columns()}"
            )
        paths = [str(row["path"]) for row in paths.select_columns(["path"]).iter_rows()]
    elif isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    cluster = Cluster(address, workers, gpus_per_worker, device=device)
    network = ModelSettings(model, weights, preprocess, size, labels, trust_pickle=trust_pickle,
                            seed=seed, device=device)  # fmt: skip
    request = ExplainSettings(
        model=network,
        out=Path(out),
        methods=methods,
        target=target,
        activation=activation,
        layer=layer,
        precision=precision,
        batch_size=batch_size,
        render=render or RenderOptions(),
        resume=resume,
        overwrite=overwrite,
        labels_from_folders=labels_from_folders,
        cluster=cluster,
    )
    session = request.session()
    settings = request.run_settings(session)
    spec = request.model.spec()
    return explain_files(session, spec, list(paths), request.out, settings, cluster, echo=echo)
