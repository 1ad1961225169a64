"""Errors raised by camlens.

Every error derives from :class:`CamlensError` and names the argument, what was expected and what
was received. ``exit_code`` is what the command line exits with when the error reaches it (2: a
usage error found before any work started).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class CamlensError(Exception):
    """Base class of camlens's errors."""

    exit_code: int = 2


class CamlensValueError(CamlensError, ValueError):
    """An argument has the right type but a wrong value (an unknown layer, a bad target...)."""


class CamlensTypeError(CamlensError, TypeError):
    """An argument has the wrong type (a numpy array where a tensor is expected...)."""


class CamlensImportError(CamlensError, ImportError):
    """An optional dependency is missing (matplotlib for figures...); the message says what to
    install."""


class CamlensWarning(UserWarning):
    """A warning about how camlens interpreted the model or the input."""


def describe(value: object) -> str:
    """A short description of ``value`` for error messages: shape and dtype for arrays."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None:
        return f"{type(value).__name__} of shape {tuple(shape)} and dtype {dtype}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_choice(value: Any, choices: Iterable[str], option: str) -> None:
    """Raise ``"{option} must be one of A, B, got 'x'"`` unless ``value`` is one of ``choices``."""
    names = list(choices)
    if value not in names:
        raise CamlensValueError(f"{option} must be one of {', '.join(names)}, got {value!r}")
