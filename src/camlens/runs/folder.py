"""A run folder, read back: ``camlens.load_run("out/")``.

A run folder is what ``camlens explain`` (any engine) writes::

    run.json            the manifest: model, methods, input size, class names, settings, counts
    results.parquet     one row per image and method (:class:`camlens.runs.row.Row`); failure
                        rows have an ``error``
    parts/*.parquet     rows of a run still going or interrupted (one file per finished batch)
    maps/*.png          every map as data: 8-bit grayscale at the model input's resolution
    overlays/*.jpg      overlays at each image's own size (webp or png on request)
    panels/, images/    opt-in: three-panel figures, copies of the inputs
    results.jsonl/.csv  the same rows for people (from results.parquet); report.html (+ .js)
    .camlens.lock       held by the run writing the folder (:mod:`camlens.runs.writer`)
    .camlens-inputs/    a Ray run's spooled to-do list while it goes (:mod:`camlens.runs.spool`)

Nothing here needs camlens to read it: Parquet, PNG and JSON. A row's map is ``PNG / 255``, equal
to the ``exp.maps`` row it came from within 8-bit rounding (0.5 / 255).

A run in an object store (``camlens.load_run("s3://bucket/prefix")``) is read the same way: its
manifest and rows are copied into a temporary folder (:func:`fetch_run`), its maps, overlays and
image copies are read from the store when asked for.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import weakref
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from camlens.errors import CamlensError, CamlensValueError
from camlens.images.decode import read_image
from camlens.images.load import to_rgb
from camlens.runs import row
from camlens.runs.store import Store, is_remote, run_folder, shown
from camlens.visualize.render import overlay

MANIFEST, RESULTS, PARTS = "run.json", "results.parquet", "parts"
#: The folder of a run folder where a Ray run past one chunk spools its to-do list.
SPOOL = ".camlens-inputs"
#: A file of it.
SPOOLED = re.compile(r"inputs-\d+\.parquet")
FORMAT, VERSION = "camlens-run", 1
#: The Arrow schema of ``results.parquet``: :func:`camlens.runs.row.schema`.
schema = row.schema


def source_path(text: str) -> Path:
    """The file a row's ``path`` names: the text itself, or, where no such file exists, the file
    name whose non-UTF-8 bytes the row stores as backslash escapes (``caf\\xe9.png``; see
    :func:`camlens.runs.row.path_text`)."""
    path = Path(text)
    if path.exists() or os.name == "nt" or "\\x" not in text:
        return path
    raw = re.sub(r"\\x([89a-f][0-9a-f])", lambda m: chr(0xDC00 + int(m.group(1), 16)), text)
    return Path(raw)  # surrogate escapes: os.fsencode gives back the file name's bytes


#: A part's file name (the local engine's and the Ray actors').
PART = re.compile(r"part-\d+(-\d+-[0-9a-f]+)?\.parquet")


def fetch_run(store: Store, into: Path) -> None:
    """Copy the run in ``store``'s manifest, parts and merged rows into the local folder ``into``
    (parts first: a writer merging meanwhile leaves their rows in the merged file)."""
    for name in sorted(store.entries(PARTS)):
        if PART.fullmatch(name):
            store.download(f"{PARTS}/{name}", into / PARTS / name)
    for name in (RESULTS, MANIFEST):
        store.download(name, into / name)


def read_rows(folder: Path, damaged: list[Path] | None = None) -> Any:
    """Every row of a run folder as a pandas DataFrame: ``results.parquet`` and then the parts
    (a run going on or interrupted), the last row kept per image, stem and method, a failure dropped
    when its image was explained later.

    A file that cannot be read raises a :class:`CamlensError` naming it; with a ``damaged`` list,
    it is added there and its rows are left out instead (what ``--resume`` redoes)."""
    import pandas as pd

    for attempt in range(3):  # a writer finishing meanwhile merges the parts and removes them
        try:
            files = [folder / RESULTS] if (folder / RESULTS).is_file() else []
            files += sorted((folder / PARTS).glob("part-*.parquet"))
            tables = [t for t in (_read(file, damaged) for file in files) if t is not None]
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    if not tables:
        return row.frame([])
    frame = row.frame(tables)
    frame["_order"] = np.arange(len(frame))
    frame["_file"] = np.repeat(np.arange(len(tables)), [t.num_rows for t in tables])
    key = frame["method"].fillna("\0failed")
    # a detection run has a row per detection: its own stem (<image>_<n>) for the same path;
    # several targets per image a row per class: the rows of the file written last, once each
    frame = frame.assign(_key=key)
    last = frame.groupby(["path", "stem", "_key"], dropna=False)["_file"].transform("max")
    frame = frame[frame["_file"] == last]
    frame = frame.drop_duplicates(["path", "stem", "_key", "target"], keep="last")
    explained = set(frame.loc[frame["error"].isna(), "path"])
    frame = frame[frame["error"].isna() | ~frame["path"].isin(explained)]
    frame = frame.sort_values("_order").drop(columns=["_order", "_key", "_file"])
    return pd.DataFrame(frame).reset_index(drop=True)


def _read(file: Path, damaged: list[Path] | None) -> Any:
    """One Parquet file of a run, or None when it is damaged and ``damaged`` collects it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(file, schema=schema())
    except (pa.ArrowException, OSError) as error:
        if isinstance(error, (FileNotFoundError, PermissionError)):
            raise
        if damaged is None:
            reason = str(error).strip().splitlines()[0][:200]
            raise CamlensError(
                f"{str(file)!r} is damaged and cannot be read ({reason}); camlens explain with "
                "--resume and the same --out sets it aside and redoes the images it held"
            ) from None
        damaged.append(file)
        return None


class Run:
    """A run folder: ``results`` (explained rows), ``failures``, ``info`` (the manifest), and
    each row's ``map``, ``overlay`` and ``image``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        out = run_folder(folder)
        self.location = shown(str(out)) if is_remote(out) else str(out)
        self.store = Store.at(out)
        self.folder = Path(out) if not is_remote(out) else Path(tempfile.mkdtemp(prefix="camlens-"))
        if is_remote(out):  # the manifest and rows, copied; files are read from the store
            weakref.finalize(self, shutil.rmtree, self.folder, True)
            fetch_run(self.store, self.folder)
        manifest = self.folder / MANIFEST
        if not manifest.is_file():
            raise CamlensValueError(
                f"{self.location!r} is not a camlens run folder (no {MANIFEST}); camlens "
                "explain --out FOLDER writes one"
            )
        try:
            self.info: dict[str, Any] = json.loads(manifest.read_text(encoding="utf-8"))
        except ValueError as error:
            raise CamlensError(
                f"{str(manifest)!r} is damaged and cannot be read ({error})"
            ) from None
        if self.info.get("format") != FORMAT:
            raise CamlensValueError(f"{str(manifest)!r} is not a camlens run manifest")
        rows = read_rows(self.folder)
        failed = rows["error"].notna()
        self.results = rows[~failed].reset_index(drop=True)
        self.failures = rows[failed][["path", "error"]].reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.results)

    def __repr__(self) -> str:
        return (
            f"Run({self.location!r}: {len(self.results)} rows, "
            f"{len(self.failures)} failures, methods {self.info.get('methods')})"
        )

    @cached_property
    def complete(self) -> bool:
        """Whether the run finished (an interrupted run has no finish time)."""
        return bool(self.info.get("finished"))

    def _row(self, i: int) -> Any:
        if not -len(self.results) <= i < len(self.results):
            raise CamlensValueError(f"row {i} is out of range: the run has {len(self)} rows")
        return self.results.iloc[i]

    def map(self, i: int) -> np.ndarray:
        """Row ``i``'s map: float32 (H, W) in [0, 1] at the model input's resolution."""
        from PIL import Image

        with Image.open(self._file(self._row(i)["map"])) as image:
            return np.asarray(image, dtype=np.float32) / 255.0

    def _file(self, name: str) -> Any:
        """The run's file ``name``: its path, or its bytes read from an object store."""
        if self.store.filesystem is None:
            return self.folder / name
        return io.BytesIO(self._bytes(name))

    def _bytes(self, name: str) -> bytes:
        """The bytes of the run's file ``name`` in its object store."""
        data = self.store.read(name)
        if data is None:
            raise CamlensValueError(f"{self.location}/{name} is missing from the run")
        return data

    def image(self, i: int) -> np.ndarray:
        """Row ``i``'s input image as uint8 RGB at its own size (the copy, else the original)."""
        chosen = self._row(i)
        copy = chosen["image"]
        if isinstance(copy, str) and self.store.filesystem is not None:
            try:  # the one decoder, as for a path: upright (EXIF orientation applied)
                return read_image(self._bytes(copy))
            except ValueError as error:
                raise CamlensValueError(
                    f"image {self.location}/{copy} cannot be read: {error}"
                ) from error
        return to_rgb(self.folder / copy if isinstance(copy, str) else source_path(chosen["path"]))

    def overlay(
        self,
        i: int,
        colormap: str | None = None,
        alpha: float | None = None,
        threshold: float | None = None,
    ) -> np.ndarray:
        """Row ``i``'s map rendered again over its image, uint8 RGB at the image's own size;
        unset options are the run's own."""
        return overlay(
            self.image(i),
            self.map(i),
            colormap or self.info.get("colormap", "jet"),
            self.info.get("alpha", 0.5) if alpha is None else alpha,
            threshold,
        )


def load_run(folder: str | os.PathLike) -> Run:
    """Open a run folder written by ``camlens explain`` (local or Ray engine); see :class:`Run`."""
    return Run(folder)
