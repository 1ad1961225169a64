"""Inputs listed as a stream, for runs too large to hold their list (10 million URIs).

:class:`Listing` lists its inputs again at each iteration, lazily: folders are walked with
:func:`os.scandir` one directory at a time, in the order :func:`~camlens.images.decode.collect`
gives (sorted paths), so a streamed listing holds one directory's entries per level of depth,
never the whole run. :func:`chunks` cuts any stream into lists of at most :data:`CHUNK` items,
the most the Ray engine's driver holds at once; :func:`stream_name` names an output from its own
path only, so names stay distinct and the same on resume without seeing every other input.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar, cast

from camlens.images.decode import Failure, os_reason
from camlens.images.pixels import IMAGE_SUFFIXES
from camlens.runs.objects import ObjectPath, is_uri, list_uris
from camlens.runs.pipeline import safe_name

T = TypeVar("T")

#: Inputs the Ray engine's driver holds at once: a run with more streams its listing.
CHUNK = 100_000


@dataclass
class Tally:
    """What one pass of a listing met besides its files: inputs that failed, non-image files."""

    failures: list[Failure] = field(default_factory=list)
    ignored: int = 0


class Listing:
    """Files, listed again (lazily) at each iteration by ``source(tally)``; ``count`` is how
    many the first full pass gave (None before)."""

    def __init__(self, source: Callable[[Tally | None], Iterator[Path]]) -> None:
        self.source = source
        self.count: int | None = None

    def __iter__(self) -> Iterator[Path]:
        return self.source(None)

    def tally(self) -> Tally:
        """One full pass, holding nothing: the files counted (``count``), what failed."""
        tally = Tally()
        self.count = sum(1 for _ in self.source(tally))
        return tally


def chunks(items: Iterable[T], size: int = CHUNK) -> Iterator[list[T]]:
    """``items`` in lists of at most ``size``, in order, drawn from ``items`` only as needed."""
    stream = iter(items)
    while chunk := list(islice(stream, size)):
        yield chunk


def stream_name(path: object) -> str:
    """An output stem from ``path`` alone: its own stem made safe and 16 hex digits of the
    SHA-256 of its whole text (distinct for distinct paths: two of 10 million collide with odds
    below 1 in 300,000)."""
    text = str(path)
    digest = hashlib.sha256(os.fsencode(text)).hexdigest()[:16]
    return f"{safe_name(ObjectPath(text).stem)}-{digest}"


def walk(folder: Path, skip: Path | None = None, tally: Tally | None = None) -> Iterator[Path]:
    """The image files below ``folder`` (resolved, hidden ones skipped, ``skip`` left out) in
    sorted path order, one directory listed at a time; unreadable folders and non-image files
    go to ``tally``."""
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as error:
        if tally is not None:
            tally.failures.append(Failure(str(folder), os_reason(error)))
        return
    seen: set[Path] = set()  # one directory's files: a link beside its target is listed once
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                if skip is None or Path(entry.path).resolve() != skip:
                    yield from walk(Path(entry.path), skip, tally)
                continue
            if not entry.is_file():
                continue
        except OSError as error:
            if tally is not None:
                tally.failures.append(Failure(entry.path, os_reason(error)))
            continue
        if Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
            if tally is not None:
                tally.ignored += 1
            continue
        path = Path(entry.path).resolve()
        if path not in seen and (skip is None or skip not in path.parents):
            seen.add(path)
            yield path


def streamable(texts: list[str]) -> bool:
    """Whether ``texts`` can be listed as a stream with the files, order and failures of
    :func:`~camlens.images.decode.collect`: existing local files and folders (no globs) and
    URIs, none inside another (so no file is listed twice)."""
    local = [t for t in texts if not is_uri(t)]
    if any(any(c in t for c in "*?[") or not os.path.exists(t) for t in local):
        return False
    roots = [Path(t).resolve() for t in local]
    uris = [t.rstrip("/") + "/" for t in texts if is_uri(t)]
    nested = any(a == b or a in b.parents for i, a in enumerate(roots) for b in roots[i + 1 :])
    return not nested and not any(
        a.startswith(b) or b.startswith(a) for i, a in enumerate(uris) for b in uris[i + 1 :]
    )


def list_inputs(texts: list[str], out: Path) -> Listing:
    """A :class:`Listing` of ``texts`` (see :func:`streamable`), the run folder ``out`` left
    out; a URI one "folder" at a time (:func:`walk_uri`)."""
    skip = Path(out).resolve()

    def source(tally: Tally | None) -> Iterator[Path]:
        for text in texts:
            if is_uri(text):
                yield from walk_uri(text, tally)
                continue
            path = Path(text)
            if not path.is_dir():
                resolved = path.resolve()
                if skip not in resolved.parents:
                    yield resolved
                continue
            below = walk(path.resolve(), skip, tally)
            first = next(below, None)
            if first is not None:
                yield first
                yield from below
            elif tally is not None:
                tally.failures.append(Failure(text, "folder holds no image files"))

    return Listing(source)


def walk_uri(uri: str, tally: Tally | None = None) -> Iterator[Path]:
    """The files of :func:`~camlens.runs.objects.list_uris` for one URI, in its order, a prefix
    listed one "folder" at a time (a delimiter listing; a glob is listed whole)."""
    from pyarrow import fs

    scheme = uri[: uri.index("://") + 3]
    found = 0
    try:
        if any(c in uri for c in "*?["):
            files, failures, _ = list_uris([uri])
            if tally is not None:
                tally.failures += failures
            yield from cast(list[Path], files)
            return
        system, root = fs.FileSystem.from_uri(uri)
        info = system.get_file_info(root)
        if info.type == fs.FileType.File:
            found += 1
            yield cast(Path, ObjectPath(scheme + root))
        elif info.type == fs.FileType.Directory:
            for found, file in enumerate(_walk_store(system, scheme, root), 1):  # noqa: B007
                yield file
    except (OSError, ValueError) as error:
        if tally is not None:
            tally.failures.append(Failure(uri, f"cannot be listed ({error})"))
        return
    if not found and tally is not None:
        tally.failures.append(Failure(uri, "no such file or folder"))


def _walk_store(system: Any, scheme: str, folder: str) -> Iterator[Path]:
    """The files below ``folder`` of a pyarrow file system, hidden ones skipped, in the order of
    their full text (a folder's entries sorted with ``/`` after each folder's name)."""
    from pyarrow import fs

    listed = system.get_file_info(fs.FileSelector(folder, recursive=False))
    is_dir = fs.FileType.Directory
    listed.sort(key=lambda i: i.base_name + ("/" if i.type == is_dir else ""))
    for info in listed:
        if info.base_name.startswith("."):
            continue
        if info.type == is_dir:
            yield from _walk_store(system, scheme, info.path)
        elif info.type == fs.FileType.File:
            yield cast(Path, ObjectPath(scheme + info.path))
