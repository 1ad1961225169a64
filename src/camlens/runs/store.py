"""Where a run's files go, whoever writes them (the driver, or a Ray actor on another node): a
local or shared folder, or any pyarrow file system (``s3://``, ``gs://``, a
:class:`pyarrow.fs.SubTreeFileSystem`...).

A :class:`Store` is small and picklable, so it ships to the actors, which write the maps,
overlays and Parquet parts of their batches straight into the run folder. A part is whole or
absent: on a folder it is fsynced under a temporary name and renamed (as the local engine writes
its parts, :func:`camlens.runs.durable.write_atomic`); in an object store it is one upload.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from camlens.errors import CamlensValueError
from camlens.runs.durable import write_atomic
from camlens.runs.objects import is_uri


@dataclass(frozen=True)
class Store:
    """The run folder ``root``: a local folder when ``filesystem`` is None, else a path in that
    pyarrow file system."""

    root: str
    filesystem: Any = None

    @classmethod
    def at(cls, out: str | os.PathLike) -> Store:
        """The store of ``--out``: a folder, or a URI (``file://`` is the local folder)."""
        text = os.fspath(out)
        if not is_uri(text):
            return cls(os.path.abspath(text))
        from pyarrow import fs

        system, root = fs.FileSystem.from_uri(text)
        if isinstance(system, fs.LocalFileSystem):
            return cls(root)
        return cls(root.rstrip("/"), system)

    @property
    def folder(self) -> Path | None:
        """The local folder, or None for a pyarrow file system."""
        return Path(self.root) if self.filesystem is None else None

    def write(self, name: str, data: bytes) -> None:
        """A file of the run (a map, an overlay) at ``name`` below the root."""
        if self.filesystem is None:
            path = Path(self.root, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return
        where = f"{self.root}/{name}"
        self.filesystem.create_dir(where.rsplit("/", 1)[0], recursive=True)
        with self.filesystem.open_output_stream(where) as stream:
            stream.write(data)

    def write_part(self, folder: str, name: str, table: Any) -> None:
        """The Parquet part ``folder/name`` (zstd), whole or absent."""
        import pyarrow.parquet as pq

        def write(handle: Any) -> None:
            pq.write_table(table, handle, compression="zstd")

        if self.filesystem is None:
            Path(self.root, folder).mkdir(parents=True, exist_ok=True)
            write_atomic(Path(self.root, folder, name), write)
            return
        base = f"{self.root}/{folder}"
        self.filesystem.create_dir(base, recursive=True)
        temporary = f"{base}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        with self.filesystem.open_output_stream(temporary) as stream:
            write(stream)
        self.filesystem.move(temporary, f"{base}/{name}")  # a rename: atomic where it can be


def run_folder(out: str | os.PathLike) -> Path:
    """The folder of ``--out``: a path, or a ``file://`` URI's path. The run's lock, manifest and
    merged results need a file system with locks: an object store (``s3://``, ``gs://``) is
    refused with what to do instead."""
    text = _unmangled(os.fspath(out))
    if is_uri(text) and not text.startswith("file://"):
        raise CamlensValueError(
            f"--out {os.fspath(out)!r}: a run folder must be a folder (local or shared, such as "
            "a bucket mounted with s3fs or gcsfuse), for its lock and manifest; inputs can be "
            "s3:// or gs:// URIs"
        )
    return Path(Store.at(text).root) if is_uri(text) else Path(out)


def _unmangled(text: str) -> str:
    """A URI that went through :class:`~pathlib.Path` (``s3:/b/k``, ``file:/x``) as given."""
    found = re.match(r"^(s3|gs|gcs|hdfs|file):/+", text)
    if found is None or is_uri(text):
        return text
    scheme, rest = found[1], text[found.end() :]
    return f"{scheme}:///{rest}" if scheme == "file" else f"{scheme}://{rest}"
