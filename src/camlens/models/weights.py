"""Library models and their weights: torchvision and timm by name, local state-dict files.

The one place that loads weights. ``weights`` is None or ``"none"`` (random), ``"DEFAULT"``
(download the library's pretrained weights; offline, a clear error naming the fix) or a local
file: a ``.safetensors`` file, or a state dict saved with ``torch.save`` and loaded with
``weights_only=True``, so that no code in the file runs.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from camlens.errors import CamlensValueError
from camlens.models.files import BUNDLED, WEIGHTS, demo_path


def is_random(weights: str | None) -> bool:
    """Whether ``weights`` asks for random initialisation (None or "none")."""
    return weights is None or weights.lower() == "none"


def _check_name(name: str, available: list[str], library: str) -> None:
    if name not in available:
        close = difflib.get_close_matches(name, available, n=5)
        raise CamlensValueError(
            f"{library} has no classification model {name!r}"
            + (f"; close names: {', '.join(close)}" if close else "")
        )


def _offline(name: str, error: Exception) -> CamlensValueError:
    return CamlensValueError(
        f"could not download the DEFAULT weights of {name} ({type(error).__name__}: {error}); "
        "offline, pass a local weights file: --weights path/to/weights.pth (a state dict saved "
        "with torch.save(model.state_dict(), path)), or --weights none for random weights"
    )


def torchvision_model(name: str, weights: str | None) -> Any:
    """``torchvision.models.get_model(name)`` in eval mode with ``weights``."""
    try:
        import torchvision
    except ImportError as error:
        raise CamlensValueError(
            "model spec torchvision:... needs torchvision (pip install 'camlens[vision]')"
        ) from error
    _check_name(name, torchvision.models.list_models(module=torchvision.models), "torchvision")
    if is_random(weights):
        return torchvision.models.get_model(name, weights=None).eval()
    if weights == "DEFAULT":
        try:
            return torchvision.models.get_model(name, weights="DEFAULT").eval()
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            raise _offline(name, error) from error
    model = torchvision.models.get_model(name, weights=None)
    return load_state(model, weights)


def timm_model(name: str, weights: str | None, **kwargs: Any) -> Any:
    """``timm.create_model(name, **kwargs)`` in eval mode with ``weights``."""
    try:
        import timm
    except ImportError as error:
        raise CamlensValueError("model spec timm:... needs timm (pip install timm)") from error
    if not timm.is_model(name):
        _check_name(name, timm.list_models(), "timm")
    if weights == "DEFAULT":
        try:
            return timm.create_model(name, pretrained=True, **kwargs).eval()
        except Exception as error:  # hub errors (OSError, HTTP, offline mode) vary by version
            raise _offline(name, error) from error
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as error:
        raise CamlensValueError(f"timm cannot create {name!r}: {error}") from error
    return model.eval() if is_random(weights) else load_state(model, weights)


def read_state(path: Path, argument: str = "--weights") -> dict[str, Any]:
    """The state dict in a ``.safetensors`` file or a ``torch.save`` file (``weights_only``)."""
    import torch

    if not path.is_file():
        raise CamlensValueError(
            f"{argument} {str(path)!r} is neither 'DEFAULT', 'none' nor an existing file"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors of every kind: report the file, never execute it
        raise CamlensValueError(
            f"{argument} {str(path)!r} is not a plain state dict ({type(error).__name__}: "
            f"{str(error)[:200]}); save one with torch.save(model.state_dict(), path)"
        ) from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CamlensValueError(
            f"{argument} {str(path)!r} holds a {type(state).__name__}, expected a state dict"
        )
    return state


def load_state(model: Any, weights: str | None, argument: str = "--weights") -> Any:
    """Load the local state-dict file ``weights`` into ``model``; return it in eval mode."""
    if weights == "DEFAULT":
        raise CamlensValueError(
            f"{argument} DEFAULT (download) applies to torchvision:NAME and timm:NAME models "
            "only; pass a local state-dict file or none"
        )
    path = Path(str(weights))
    state = read_state(path, argument)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CamlensValueError(
            f"{argument} {str(path)!r} does not fit the model: {str(error)[:300]}"
        ) from error
    return model.eval()


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Random initialisation drawn from ``seed`` (torch on the CPU, numpy's and Python's global
    generators), so that every process building a random-weight model builds the same one; the
    caller's generator states are put back afterwards."""
    import random

    import numpy as np
    import torch

    python, legacy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(legacy)


def weights_digest(spec: str, weights: str | None) -> str | None:
    """The SHA-256 of the file that holds the weights: ``weights`` when it is a file, else the
    model file or checkpoint folder ``spec`` names; None for downloaded or random weights."""
    if (
        weights is not None
        and not is_random(weights)
        and weights != "DEFAULT"
        and Path(weights).is_file()
    ):
        path = Path(weights)
    elif spec in BUNDLED:
        path = demo_path(spec) / WEIGHTS
    elif (Path(spec) / WEIGHTS).is_file() or Path(spec).is_file():
        path = Path(spec) / WEIGHTS if Path(spec).is_dir() else Path(spec)
    else:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
