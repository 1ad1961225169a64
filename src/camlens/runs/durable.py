"""Files written whole or not at all: a temporary name, fsync, rename, then the folder fsynced.

Every file of a run folder that says what the run holds (parts, ``results.*``, the report,
``run.json``) is written through :func:`write_atomic`, so a kill, a full disk or a power cut
leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that the renames in it survive a power cut."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write ``path`` whole or not at all: ``write`` fills a temporary file, which is fsynced and
    renamed over ``path``, then the folder is fsynced."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    sync_folder(path.parent)


def write_bytes(path: Path, data: bytes) -> None:
    """:func:`write_atomic` of ``data``."""
    write_atomic(path, lambda handle: handle.write(data))
