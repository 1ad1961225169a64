"""Class names: ImageNet's 1000 (from torchvision's weight metadata, offline) or a user's file."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from camlens.errors import CamlensValueError


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...] | None:
    """The 1000 ImageNet class names in index order, or None without torchvision."""
    try:
        from torchvision.models import ResNet18_Weights
    except ImportError:
        return None
    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in index order (``n01440764`` is class 0, tench): the
    class-folder names of ImageNet's train and val sets (the list timm ships)."""
    text = (Path(__file__).parents[1] / "data" / "imagenet_wnids.txt").read_text(encoding="ascii")
    return tuple(text.split())


def load_labels(path: str | os.PathLike) -> list[str]:
    """Class names from a file, index order.

    Accepted: a text file with one name per line; a JSON list of names; a JSON object mapping
    index to name (``{"0": "cat"}``) or to ``[wnid, name]`` (Keras' ``imagenet_class_index.json``).
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CamlensValueError(f"--labels {str(path)!r} cannot be read: {error}") from error
    if file.suffix.lower() != ".json":
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
        if not names:
            raise CamlensValueError(f"--labels {str(path)!r} is empty; expected one name a line")
        return names
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise CamlensValueError(f"--labels {str(path)!r} is not valid JSON: {error}") from error
    if isinstance(data, list) and all(isinstance(n, str) for n in data):
        return list(data)
    if isinstance(data, dict):
        try:
            items = sorted((int(k), v) for k, v in data.items())
        except ValueError:
            items = []
        if items and [k for k, _ in items] == list(range(len(items))):
            return [v[-1] if isinstance(v, list) else str(v) for _, v in items]
    raise CamlensValueError(
        f"--labels {str(path)!r}: expected a JSON list of names or an object "
        '{"0": "name", ...} with indices 0..N-1'
    )


def class_name(names: list[str] | tuple[str, ...] | None, index: int) -> str:
    """The name of class ``index``, or the index as text when no name is known."""
    if names is not None and 0 <= index < len(names):
        return names[index]
    return str(index)


def load_class_map(path: str | os.PathLike) -> dict[str, str | int]:
    """``--class-map``: which class each class folder is, folder -> class name or index.

    Accepted: a JSON object (``{"misc": "golden retriever", "kitten": 281}``) or a two-column
    CSV/TSV file, one folder a line (a first line ``folder,class`` is a header and skipped).
    """
    file = Path(path)
    where = f"--class-map {str(path)!r}"
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CamlensValueError(f"{where} cannot be read: {error}") from error
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CamlensValueError(f"{where} is not valid JSON: {error}") from error
        if not isinstance(data, dict) or not all(
            isinstance(v, (str, int)) and not isinstance(v, bool) for v in data.values()
        ):
            raise CamlensValueError(
                f'{where}: expected a JSON object {{"folder": "class name" or index, ...}}'
            )
        return {str(k): v for k, v in data.items()}
    import csv

    found: dict[str, str | int] = {}
    lines = text.splitlines()
    dialect = "excel-tab" if any("\t" in line for line in lines) else "excel"
    for number, row in enumerate(csv.reader(lines, dialect=dialect), start=1):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise CamlensValueError(
                f"{where} line {number}: expected two columns, folder and class (name or index)"
            )
        folder, value = (cell.strip() for cell in row)
        if number == 1 and folder.lower() == "folder":
            continue
        found[folder] = int(value) if value.isdigit() else value
    if not found:
        raise CamlensValueError(f"{where} is empty; expected one folder and its class a line")
    return found
