"""Model specs for the command line: ``torchvision:NAME`` (more kinds come with the full CLI)."""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from camlens.errors import CamlensValueError


def load_spec(spec: str, weights: str | None = None) -> nn.Module:
    """Build the model a spec names. ``weights``: None/"none" (random), "DEFAULT" or a .pth file."""
    kind, _, name = spec.partition(":")
    if kind != "torchvision" or not name:
        raise CamlensValueError(
            f"unknown model spec {spec!r}; expected torchvision:NAME (e.g. torchvision:resnet18)"
        )
    try:
        import torchvision
    except ImportError as error:
        raise CamlensValueError(
            "model spec torchvision:... needs torchvision (pip install 'camlens[vision]')"
        ) from error
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        import difflib

        close = difflib.get_close_matches(name, available, n=5)
        raise CamlensValueError(
            f"torchvision has no classification model {name!r}"
            + (f"; close names: {', '.join(close)}" if close else "")
        )
    if weights in (None, "none", "None"):
        return torchvision.models.get_model(name, weights=None).eval()
    if weights == "DEFAULT":
        try:
            return torchvision.models.get_model(name, weights="DEFAULT").eval()
        except OSError as error:  # URLError is an OSError
            raise CamlensValueError(
                f"could not download the DEFAULT weights of {name} ({error}); offline, pass a "
                "local weights file: --weights path/to/weights.pth"
            ) from error
    path = Path(weights)
    if not path.is_file():
        raise CamlensValueError(
            f"weights {weights!r} is neither 'DEFAULT', 'none' nor an existing file"
        )
    import torch

    model = torchvision.models.get_model(name, weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
