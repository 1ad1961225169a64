"""Inputs in object stores: ``s3://``, ``gs://``, ``file://`` files, prefixes and globs listed and
read through pyarrow's file systems, named as local files are."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import cast

import numpy as np

from camlens.images.decode import Failure, read_image
from camlens.runs.pipeline import output_names

#: URI schemes read through pyarrow's file systems.
SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "file://")


def is_uri(text: str) -> bool:
    """Whether ``text`` is an object-storage URI (:data:`SCHEMES`)."""
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


def names(files: Sequence[Path]) -> dict[str, str]:
    """:func:`~camlens.runs.local.output_names` for local paths and URIs alike."""
    keyed = {PurePosixPath("/" + str(f).split("://", 1)[-1].lstrip("/")): str(f) for f in files}
    stems = output_names(cast(Sequence[Path], list(keyed)))
    return {keyed[cast(PurePosixPath, k)]: v for k, v in stems.items()}


def as_path(text: str) -> Path:
    """A row's path text as a :class:`~pathlib.Path` or an :class:`ObjectPath`."""
    return cast(Path, ObjectPath(text)) if is_uri(text) else Path(text)
