"""Where a run's files go, whoever writes them (the driver, or a Ray actor on another node): a
local or shared folder, or any pyarrow file system (``s3://``, ``gs://``, a
:class:`pyarrow.fs.SubTreeFileSystem`...).

A :class:`Store` is small and picklable, so it ships to the actors, which write the maps,
overlays and Parquet parts of their batches straight into the run folder. A part is whole or
absent: on a folder it is fsynced under a temporary name and renamed (as the local engine writes
its parts, :func:`camlens.runs.durable.write_atomic`); in an object store it is one upload.

An object store's credentials travel in its URI (``s3://KEY:SECRET@bucket/prefix?region=...``,
pyarrow's own form) or in the usual environment of every node; messages show a URI without them
(:func:`shown`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from camlens.errors import CamlensValueError
from camlens.runs.durable import write_atomic

#: pyarrow file systems whose objects need no parent folder made first (a request saved per
#: file: a third of a small upload's time, measured on moto's S3 server).
FLAT = ("s3", "gcs")

#: A URI's scheme (two letters at least: ``C:/`` is a Windows path).
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")


def is_uri(text: str) -> bool:
    """Whether ``text`` is a URI (``scheme://...``)."""
    return _SCHEME.match(text) is not None and "://" in text


def is_remote(out: str | os.PathLike) -> bool:
    """Whether ``--out`` names an object store: a URI other than ``file://``."""
    text = os.fspath(out)
    return is_uri(text) and not text.startswith("file://")


def shown(uri: str) -> str:
    """``uri`` as messages show it: no credentials, no query (``s3://bucket/prefix``)."""
    scheme, rest = uri.split("://", 1)
    host, _, path = rest.split("?", 1)[0].partition("/")
    return f"{scheme}://{host.rsplit('@', 1)[-1]}/{path}".rstrip("/")


def local_folder(out: str | os.PathLike) -> Path:
    """The folder where a run's driver keeps the run's own small files: ``out`` itself, or for
    an object store a staging folder of this user's cache
    (``$XDG_CACHE_HOME/camlens/runs/<hash of the URI without credentials>``)."""
    if not is_remote(out):
        return Path(out)
    text = os.fspath(out)
    scheme, rest = text.split("://", 1)
    host, slash, path = rest.partition("/")
    public = f"{scheme}://{host.rsplit('@', 1)[-1]}{slash}{path}"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "camlens" / "runs" / hashlib.sha256(public.encode()).hexdigest()[:16]


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

        try:
            system, root = fs.FileSystem.from_uri(text)
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise CamlensValueError(
                f"--out {shown(text)!r}: pyarrow cannot open it ({error}); expected a folder or "
                "a URI of a pyarrow file system (s3://bucket/prefix, gs://bucket/prefix...)"
            ) from None
        if isinstance(system, fs.LocalFileSystem):
            return cls(root)
        return cls(root.rstrip("/"), system)

    @property
    def folder(self) -> Path | None:
        """The local folder, or None for a pyarrow file system."""
        return Path(self.root) if self.filesystem is None else None

    @property
    def system(self) -> Any:
        """The pyarrow file system (the local one for a folder)."""
        from pyarrow import fs

        return self.filesystem or fs.LocalFileSystem()

    def path(self, name: str = "") -> str:
        """``name`` below the root, as the file system names it."""
        return f"{self.root}/{name}" if name else self.root

    def read(self, name: str) -> bytes | None:
        """The file ``name``, or None when there is none."""
        try:
            with self.system.open_input_stream(self.path(name)) as stream:
                return bytes(stream.read())
        except FileNotFoundError:
            return None

    def entries(self, folder: str = "") -> dict[str, Any]:
        """The files and folders directly in ``folder`` (name -> size; None for a folder)."""
        from pyarrow import fs

        listed = self.system.get_file_info(fs.FileSelector(self.path(folder), allow_not_found=True))
        return {
            info.path.rsplit("/", 1)[-1]: info.size if info.type == fs.FileType.File else None
            for info in listed
        }

    def delete(self, name: str) -> None:
        """Remove the file ``name`` (nothing when it is gone already)."""
        with contextlib.suppress(FileNotFoundError):
            self.system.delete_file(self.path(name))

    def download(self, name: str, to: Path) -> bool:
        """Copy the file ``name`` to the local ``to``; False when there is none."""
        data = self.read(name)
        if data is not None:
            to.parent.mkdir(parents=True, exist_ok=True)
            to.write_bytes(data)
        return data is not None

    def write(self, name: str, data: bytes) -> None:
        """A file of the run (a map, an overlay) at ``name`` below the root."""
        if self.filesystem is None:
            path = Path(self.root, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return
        where = self.path(name)
        if self.filesystem.type_name not in FLAT:
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
        base = self.path(folder)
        if self.filesystem.type_name not in FLAT:
            self.filesystem.create_dir(base, recursive=True)
        temporary = f"{base}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        with self.filesystem.open_output_stream(temporary) as stream:
            write(stream)
        self.filesystem.move(temporary, f"{base}/{name}")  # a rename: atomic where it can be


def run_folder(out: str | os.PathLike) -> Path | str:
    """The run folder of ``--out``: a path (also a ``file://`` URI's), or an object store's URI
    as text (``s3://``, ``gs://``, any pyarrow file system; see :mod:`camlens.runs.remote`)."""
    text = _unmangled(os.fspath(out))
    if is_remote(text):
        return text
    return Path(Store.at(text).root) if is_uri(text) else Path(out)


def joined(out: str | os.PathLike, name: str) -> str:
    """The file ``name`` of the run folder ``out``, as messages show it."""
    return f"{shown(os.fspath(out))}/{name}" if is_remote(out) else str(Path(out) / name)


def _unmangled(text: str) -> str:
    """A URI that went through :class:`~pathlib.Path` (``s3:/b/k``, ``file:/x``) as given."""
    found = _SCHEME.match(text)
    if found is None or is_uri(text):
        return text
    scheme, rest = found[1], text[found.end() :].lstrip("/")
    return f"{scheme}:///{rest}" if scheme == "file" else f"{scheme}://{rest}"
