"""Shims for names and modules that moved: the old path keeps working for one release and warns.

A module that moved is listed in :data:`MOVED_MODULES` (old -> new); :func:`install` puts a finder
on ``sys.meta_path`` so that ``import camlens.io`` still works and every name taken from it warns
with a ``DeprecationWarning`` naming the new module. No file is left at the old place.

A module whose names moved ends with::

    from camlens._deprecation import moved

    __getattr__, __dir__ = moved(__name__, {"read_image": "camlens.images.read_image"})

``camlens.old.read_image`` and ``from camlens.old import read_image`` then return the object
from its new place with a ``DeprecationWarning`` that names that place.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
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


#: Modules that moved in 0.6's package map (issue 20): old dotted path -> new.
MOVED_MODULES: dict[str, str] = {
    "camlens.app": "camlens.runs",
    "camlens.app.annotations": "camlens.images.annotations",
    "camlens.app.durable": "camlens.runs.durable",
    "camlens.app.engine": "camlens.runs.local",
    "camlens.app.evaluation": "camlens.runs.evaluation",
    "camlens.app.inputs": "camlens.images.decode",
    "camlens.app.records": "camlens.runs.records",
    "camlens.app.session": "camlens.runs.session",
    "camlens.app.tasks": "camlens.runs.tasks",
    "camlens.app.writer": "camlens.runs.writer",
    "camlens.architectures": "camlens.models.architectures",
    "camlens.checkpoint": "camlens.models.checkpoint",
    "camlens.demo": "camlens.runs.demo",
    "camlens.detect": "camlens.targets.detector",
    "camlens.display": "camlens.visualize.display",
    "camlens.distributed": "camlens.runs.distributed",
    "camlens.figures": "camlens.visualize.figures",
    "camlens.inputs": "camlens.backends.inputs",
    "camlens.io": "camlens.images.load",
    "camlens.labels": "camlens.images.labels",
    "camlens.locks": "camlens.backends.locks",
    "camlens.preprocessing": "camlens.images.preprocessing",
    "camlens.registry": "camlens.methods._registry",
    "camlens.render": "camlens.visualize.render",
    "camlens.render_tasks": "camlens.visualize.tasks",
    "camlens.report": "camlens.runs.report",
    "camlens.run": "camlens.runs.folder",
    "camlens.training": "camlens.models.training",
    "camlens.weights": "camlens.models.weights",
}


def _forwarding(old: str, new: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old`` that hands out ``new``'s names, warning each time."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        target = importlib.import_module(new)
        if not hasattr(target, name):
            raise AttributeError(f"module {old!r} (now {new!r}) has no attribute {name!r}")
        warnings.warn(
            f"{old} moved to {new}; import {name} from there ({old} goes away in {REMOVAL})",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(target, name)

    return __getattr__


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the modules of :data:`MOVED_MODULES` at their old paths, as forwarding shims."""

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        package = any(other.startswith(fullname + ".") for other in MOVED_MODULES)
        return importlib.util.spec_from_loader(fullname, self, is_package=package)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        new = MOVED_MODULES[module.__name__]
        module.__doc__ = f"Moved to {new} (this path goes away in {REMOVAL})."
        module.__getattr__ = _forwarding(module.__name__, new)  # type: ignore[method-assign]  # a module-level __getattr__ (PEP 562)
        if module.__spec__ is not None and module.__spec__.submodule_search_locations is not None:
            module.__path__ = []


_FINDER = _OldPaths()


def install() -> None:
    """Put the old-path finder on ``sys.meta_path`` (once)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
