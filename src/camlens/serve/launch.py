"""Starting the server: checks of the command line's choices, the model, then uvicorn."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camlens.errors import CamlensValueError


@dataclass
class Settings:
    """What ``camlens serve`` was asked for."""

    model: str = "demo"
    weights: str | None = None
    labels: Path | None = None
    runs: Sequence[Path] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    size: int | None = None
    preprocess: str = "auto"
    device: str = "auto"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only answers this machine (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, token: str | None) -> str | None:
    """A warning for a non-loopback address (which then needs a token), else None."""
    if is_loopback(host):
        return None
    if not token:
        raise CamlensValueError(
            f"--host {host} lets other machines reach the server and run the model: pass "
            "--token SECRET too (the page sends it), or keep the default 127.0.0.1"
        )
    return (
        f"warning: serving on {host}: anyone who can reach it and knows the token can run the "
        "model; traffic is plain HTTP"
    )


def build(settings: Settings, *, trust_pickle: bool = False, **limits: Any) -> Any:
    """The ASGI app for ``settings``: the model loaded, the run folders read."""
    from camlens.app.session import Session
    from camlens.serve.app import create_app
    from camlens.serve.service import ModelService

    session = Session.from_spec(
        settings.model,
        settings.weights,
        device=settings.device,
        preprocess=settings.preprocess,
        size=settings.size,
        labels=settings.labels,
        trust_pickle=trust_pickle,
    )
    service = ModelService(session)
    runs = None
    if settings.runs:
        from camlens.serve.runs import Runs

        runs = Runs(settings.runs)
    # off loopback the token guards the API; on loopback the Host header must be loopback too
    hosts = None if is_loopback(settings.host) else ["*"]
    return create_app(service, runs=runs, token=settings.token, allowed_hosts=hosts, **limits)


def launch(
    settings: Settings,
    *,
    trust_pickle: bool = False,
    echo: Callable[[str], None] = print,
    **limits: Any,
) -> None:
    """Check the settings, load the model and serve until interrupted."""
    try:
        import uvicorn
    except ImportError as error:
        raise CamlensValueError(
            f'camlens serve needs the serve extra: pip install "camlens[serve]" ({error})'
        ) from error
    warning = check_host(settings.host, settings.token)
    if warning:
        echo(warning)
    app = build(settings, trust_pickle=trust_pickle, **limits)
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{shown}:{settings.port}/" + (
        f"#token={settings.token}" if settings.token else ""
    )
    echo(f"camlens serve: {settings.model} on {url}")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
