"""Shims for names that moved: the old path keeps working for one release and warns.

A module whose names moved ends with::

    from camlens._deprecation import moved

    __getattr__, __dir__ = moved(__name__, {"read_image": "camlens.images.read_image"})

``camlens.old.read_image`` and ``from camlens.old import read_image`` then return the object
from its new place with a ``DeprecationWarning`` that names that place.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

#: When the old paths go away, as the warnings say.
REMOVAL = "the next release"


def moved(
    module: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module-level ``__getattr__`` and ``__dir__`` for ``module``, whose ``names`` moved
    (old name -> new dotted path, ``"camlens.images.read_image"``)."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"{module}.{name} moved to {names[name]}; import it from there "
            f"({module}.{name} goes away in {REMOVAL})",
            DeprecationWarning,
            stacklevel=2,
        )
        return resolve(names[name])

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[module]), *names})

    return __getattr__, __dir__


def resolve(path: str) -> Any:
    """The object at a dotted path: its longest importable module, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:cut])
        try:
            obj: Any = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise  # the module exists but needs something missing
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ModuleNotFoundError(f"no module in {path!r}", name=path)
