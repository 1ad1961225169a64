"""The Ray engine: the same run folder as the local engine, explained on a Ray cluster with no
single-machine bottleneck.

Ray Data's batch-inference pattern around the app layer, not a scheduler of ours: the driver lists
the inputs (local files, folders and globs, or ``s3://``/``gs://``/``file://`` prefixes and globs
through pyarrow's file systems, :mod:`camlens.runs.objects`), skips what a resumed run has done,
and hands the paths to two ``map_batches`` stages (:mod:`camlens.runs.actors`): decoding tasks on
CPUs (``--decoders``) feeding a pool of model actors (``--workers``, ``--gpus-per-worker``) that
explain, render and write their maps, overlays and Parquet parts straight into the run folder
(a shared folder or an object store, :class:`~camlens.runs.store.Store`). The driver holds the
folder's lock and manifest (:class:`~camlens.runs.writer.RunWriter`), receives a few hundred bytes
per image (the rows' keys, never images), and merges the parts when the run finishes, so
``camlens.load_run``, the report and ``--resume`` work unchanged (``"engine": "ray"``).

Nothing lost, nothing twice: Ray restarts an actor that dies and retries the batch it held
(Ray Data's actor pools default to unlimited ``max_restarts`` and ``max_task_retries``); a
retried batch writes its part again under another name, and the merge keeps one row per image
and method. Ray is imported only here and only when a run starts (``pip install "camlens[ray]"``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from camlens._deprecation import moved
from camlens.errors import CamlensValueError
from camlens.runs import listing
from camlens.runs.actors import Delivered, Worker, decode_rows, ship
from camlens.runs.local import local_inputs
from camlens.runs.objects import ObjectPath, is_uri, list_uris
from camlens.runs.pipeline import (
    Hooks,
    Inputs,
    Job,
    Outcome,
    RunSettings,
    Summary,
    check_target,
    log_failure,
    manifest,
    run,
)
from camlens.runs.records import RenderOptions
from camlens.runs.remote import claim
from camlens.runs.session import Session, actor_device
from camlens.runs.settings import ExplainSettings, ModelSettings
from camlens.runs.spool import Spool, read_spool, to_read
from camlens.runs.store import Store, run_folder

__all__ = ["Cluster", "ObjectPath", "RayEngine", "Worker", "explain", "explain_files", "start"]

#: Batches in flight in one actor: one in the model, one rendering or writing beside it.
CALLS = 2
#: CPUs a decoding task holds.
DECODER_CPUS = 1.0
#: Calls a decoding worker process serves before it exits: 0, unlimited (Ray's default for CPU
#: tasks, given explicitly: an option the actors do not have keeps Ray Data from fusing decoding
#: into the model actors).
DECODER_CALLS = 0


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
        actor_device(self.device, self.gpus_per_worker)
        if self.address is None and self.gpus_per_worker > 0 and not torch.cuda.is_available():
            raise CamlensValueError(
                f"--gpus-per-worker {self.gpus_per_worker:g} asks for GPUs, but this machine has "
                "none; pass --address of a cluster with GPUs, or --gpus-per-worker 0"
            )


def start(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to Ray (``address``) or start it on this machine (``num_cpus`` cores, all by
    default); True when this call started or joined it, False when Ray was already up.

    A local Ray's workers import the same camlens as this process (its folder first on the
    ``PYTHONPATH`` its processes inherit: with a ``runtime_env``, the workers Ray starts ahead
    could not serve the run); on a cluster, camlens must be installed on every node.
    """
    import ray

    if ray.is_initialized():
        return False
    options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                   logging_level=logging.WARNING)  # fmt: skip
    paths = os.environ.get("PYTHONPATH")
    if address is None:
        root = str(Path(__file__).resolve().parents[2])  # src/, above camlens/
        kept = [p for p in (paths or "").split(os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *kept])
        options["num_cpus"] = num_cpus
        options["_node_ip_address"] = "127.0.0.1"  # a local Ray listens on loopback only
    try:  # "local": a Ray of its own, even where another runs on this machine (Ray's default
        # would join that one, and refuse num_cpus); --address auto joins it on purpose
        ray.init(address=address or "local", **options)
    finally:  # this process's environment as it was
        if paths is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = paths
    return True


class RayEngine:
    """Decoding tasks feed a pool of model actors that write the run folder themselves
    (:mod:`camlens.runs.actors`); the driver lists local files and object-storage URIs, keeps
    one row per image and method, and merges the actors' parts when the run finishes.

    ``traffic`` measures the driver's side: ``bytes`` received from the actors, ``images``
    explained, ``writers`` images per ``host:pid`` of the actors that wrote them, the process
    ids of the ``decoders``."""

    name = "ray"

    def __init__(self, spec: dict[str, Any], cluster: Cluster) -> None:
        self.spec, self.cluster = spec, cluster
        self.traffic: dict[str, Any] = dict(
            bytes=0, images=0, writers=Counter(), decoders=set(), actor_s=0.0, driver_cpu_s=0.0
        )

    def inputs(self, paths: Sequence[str | os.PathLike], out: Path, labels: bool) -> Inputs:
        """Listed once; when more than :data:`~camlens.runs.listing.CHUNK` files, a stream
        (:class:`~camlens.runs.listing.Listing`) listed again as the run goes, else a list."""
        texts = [os.fspath(p) for p in paths]
        if not labels and listing.streamable(texts):
            streamed = listing.list_inputs(texts, out)
            tally = streamed.tally()
            if (streamed.count or 0) > listing.CHUNK:
                return Inputs(cast(list[Path], streamed), tally.failures, tally.ignored)
        found = local_inputs([t for t in texts if not is_uri(t)], out, labels)
        objects, unlisted, object_classes = list_uris([t for t in texts if is_uri(t)])
        classes = found.classes | object_classes if labels else {}
        files = [*found.files, *cast(list[Path], objects)]
        return Inputs(files, found.failures + unlisted, found.ignored, classes)

    @contextlib.contextmanager
    def started(self, out: Path | str, settings: RunSettings) -> Iterator[None]:
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
        if not job.todo:
            return
        store, run = job.writer.store, job.writer.reserve()  # an object store's, for s3://
        stage = Stage(self.spec, job.settings, self.cluster, store, run, ship(job.session.model))
        begin = time.process_time()
        feed = to_read(job)
        try:
            for block in _run(feed, len(job.todo), job.session.size, stage):
                self.traffic["bytes"] += block.nbytes
                for data in block.column("delivered").to_pylist():
                    yield self._outcome(pickle.loads(data), job)
        finally:
            self.traffic["driver_cpu_s"] += time.process_time() - begin
            if isinstance(feed, Spool):
                feed.remove()

    def _outcome(self, delivered: Delivered, job: Job) -> Outcome:
        """A batch an actor wrote, said and counted once (a retried batch can arrive twice)."""
        for trace in delivered.traces:
            log_failure(job.out, trace.paths, trace.text)
        done = job.writer.done
        fresh = [key for key in delivered.done if key not in done]
        failed = [f for f in delivered.failures if (f.path, "") not in done]
        done |= set(fresh) | {(f.path, "") for f in failed}
        explained = {path for path, _ in fresh}
        self.traffic["images"] += len(explained)
        self.traffic["writers"][f"{delivered.host}:{delivered.pid}"] += len(explained)
        self.traffic["decoders"] |= set(delivered.decoders)
        self.traffic["actor_s"] += delivered.seconds
        handled = len(explained | {f.path for f in failed})
        return Outcome(list, failed, len(explained), handled, stored=True)


@dataclass
class Stage:
    """What the actors of one run are built with: the model spec, the run's settings, the
    cluster, where they write (``store``), the part number the driver reserved (``run``) and
    the driver's model in Ray's object store (``model``, :func:`~camlens.runs.actors.ship`)."""

    spec: dict[str, Any]
    settings: RunSettings
    cluster: Cluster
    store: Store
    run: int
    model: Any = None


def explain_files(
    session: Session,
    spec: dict[str, Any],
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
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
    out = run_folder(out)
    spec = dict(spec, labels=session.names)  # the driver's class names: no file needed on nodes
    info = manifest(session, settings, engine="ray")
    hooks = Hooks(echo, advance, total, title)
    engine = RayEngine(spec, cluster)
    summary = run(engine, session, paths, out, settings, info, hooks)
    traffic = engine.traffic
    summary.engine = dict(traffic, writers=dict(traffic["writers"]),
                          decoders=sorted(traffic["decoders"]))  # fmt: skip
    return summary


def _check_resources(cluster: Cluster) -> None:
    """Refuse a pool the cluster cannot place (Ray would wait for it for ever)."""
    import ray

    have = ray.cluster_resources()
    gpus, cpus = float(have.get("GPU", 0)), float(have.get("CPU", 0))
    if cluster.gpus_per_worker > 0 and gpus < cluster.gpus_per_worker:
        raise CamlensValueError(
            f"--gpus-per-worker {cluster.gpus_per_worker:g}: the Ray cluster has {gpus:g} GPU(s)"
        )
    if cpus < cluster.cpus_per_worker + DECODER_CPUS:
        raise CamlensValueError(
            f"a worker needs {cluster.cpus_per_worker:g} CPU(s) and a decoding task "
            f"{DECODER_CPUS:g}: the Ray cluster has {cpus:g}"
        )


def _run(feed: list[dict[str, Any]] | Spool, count: int, size: int, stage: Stage) -> Iterable[Any]:
    """Every output block (pyarrow) of decoding tasks feeding the actor pool."""
    import ray

    context = ray.data.DataContext.get_current()
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # camlens shows its own progress
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    settings, cluster = stage.settings, stage.cluster
    blocks = max(1, -(-count // settings.batch_size))
    if isinstance(feed, Spool):  # read by Ray's tasks, a chunk at a time, not by the driver
        dataset = read_spool(feed)
    else:
        dataset = ray.data.from_items(feed, override_num_blocks=blocks)
    decoded = dataset.map_batches(
        cast(Any, decode_rows),
        batch_size=settings.batch_size,
        fn_kwargs={"size": size},
        concurrency=max(1, min(settings.decoders, blocks)),
        num_cpus=DECODER_CPUS,
        max_calls=DECODER_CALLS,
        batch_format="numpy",
    )
    actors = dict(stage.spec, device=actor_device(cluster.device, cluster.gpus_per_worker))
    explained = decoded.map_batches(
        Worker,
        batch_size=settings.batch_size,
        compute=ray.data.ActorPoolStrategy(
            size=cluster.workers,
            max_concurrent_calls_per_actor=CALLS,
            enable_true_multi_threading=True,
        ),
        fn_constructor_kwargs={
            "spec": actors,
            "settings": settings,
            "store": stage.store,
            "run": stage.run,
            "model": stage.model,
        },  # fmt: skip
        num_cpus=cluster.cpus_per_worker,
        num_gpus=cluster.gpus_per_worker or None,
        batch_format="numpy",
    )
    yield from explained.iter_batches(batch_size=None, batch_format="pyarrow")


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
    decoders: int = 2,
    prompts: str | Sequence[str] | None = None,
    echo: Callable[[str], None] = print,
) -> Summary:
    """``camlens explain --engine ray`` from Python: explain ``paths`` (files, folders, globs,
    ``s3://``/``gs://`` prefixes, or a Ray Dataset with a ``path`` column) with the model ``model``
    into the run folder ``out``; returns the run's :class:`~camlens.runs.local.Summary`
    (``prompts``: an image-text model's classes, as ``--prompts``).

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
                            seed=seed, device=device, prompts=prompts)  # fmt: skip
    request = ExplainSettings(
        model=network,
        out=run_folder(out),
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
        decoders=decoders,
    )
    session = request.session()
    settings = request.run_settings(session)
    spec = request.model.spec()
    return explain_files(session, spec, list(paths), request.out, settings, cluster, echo=echo)


__getattr__, __dir__ = moved(
    __name__,
    {
        "SCHEMES": "camlens.runs.objects.SCHEMES",
        "read_object": "camlens.runs.objects.read_object",
        "Trace": "camlens.runs.actors.Trace",
    },
)
