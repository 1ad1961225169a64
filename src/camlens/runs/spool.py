"""The Ray engine's to-do list: rows in the driver's memory for a listed run, or, past one
chunk of inputs (:data:`~camlens.runs.listing.CHUNK`), Parquet files spooled into the run folder
(which every node reads) and read by Ray's tasks, a chunk at a time."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from camlens.runs import listing
from camlens.runs.folder import SPOOL
from camlens.runs.objects import names
from camlens.runs.pipeline import Job
from camlens.runs.store import Store


@dataclass
class Spool:
    """A streamed to-do list written as Parquet files of at most
    :data:`~camlens.runs.listing.CHUNK` rows each in ``folder`` (the run folder's
    :data:`SPOOL`, which every node reads; in an object store's run, the store's ``files``),
    the Ray engine's input past one chunk."""

    folder: Path
    files: list[str]
    store: Store = Store("")  # the run's (files in an object store: read through its system)

    def remove(self) -> None:
        """The spooled files gone (the run is over, or stopped: a resume lists again)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        for file in self.files:  # an object store's (a folder's are gone already)
            self.store.delete(f"{SPOOL}/{file.rsplit('/', 1)[-1]}")


def to_read(job: Job) -> list[dict[str, Any]] | Spool:
    """The rows the decoding tasks read: a list for a listed run (stems unique among all its
    files, :func:`~camlens.runs.objects.names`), else a :class:`Spool` written one chunk at a
    time (stems from each path alone, :func:`~camlens.runs.listing.stream_name`; paths as
    bytes, which Parquet holds whatever their encoding)."""
    if isinstance(job.todo, list):
        stems = names(job.files)
        return [
            {"index": i, "path": str(f), "stem": stems[str(f)],
             "true_name": job.classes.get(str(f), ""), "true_label": job.label(f)[0]}
            for i, f in enumerate(job.todo)
        ]  # fmt: skip
    import pyarrow as pa

    spool, store = Spool(job.out / SPOOL, [], job.writer.store), job.writer.store
    shutil.rmtree(spool.folder, ignore_errors=True)
    start = 0
    for chunk in listing.chunks(job.todo, listing.CHUNK):
        table = pa.table({
            "index": pa.array(range(start, start + len(chunk)), pa.int64()),
            "path": pa.array([os.fsencode(f) for f in chunk], pa.binary()),
            "stem": [listing.stream_name(f) for f in chunk],
            "true_name": [""] * len(chunk),
            "true_label": pa.array([-1] * len(chunk), pa.int64()),
        })  # fmt: skip
        name = f"inputs-{len(spool.files):06d}.parquet"  # in the store, which every node reads
        store.write_part(SPOOL, name, table)
        spool.files.append(store.path(f"{SPOOL}/{name}"))
        start += len(chunk)
    return spool


def read_spool(spool: Spool) -> Any:
    """A Ray Dataset of a spooled to-do list: one read task per chunk file, read with pyarrow
    by Ray's tasks (the driver holds the files' names only)."""
    import ray
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class SpoolSource(Datasource):
        def get_read_tasks(
            self, parallelism: int, per_task_row_limit: Any = None, data_context: Any = None
        ) -> Any:
            meta = [BlockMetadata(None, None, None, input_files=(file,)) for file in spool.files]
            read = [partial(read_chunk, file, spool.store.filesystem) for file in spool.files]
            limit = per_task_row_limit
            return [ReadTask(*task, per_task_row_limit=limit) for task in zip(read, meta)]

        def estimate_inmemory_data_size(self) -> None:
            return None

    return ray.data.read_datasource(SpoolSource())


def read_chunk(file: str, filesystem: Any = None) -> list[Any]:
    """One chunk of a spooled to-do list, as one block (``filesystem``: pyarrow's, for a spool
    in an object store)."""
    import pyarrow.parquet as pq

    return [pq.read_table(file, filesystem=filesystem)]
