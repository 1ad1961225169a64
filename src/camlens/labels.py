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
