"""Starting the server: checks of the command line's choices, the port, the model, then uvicorn.

uvicorn runs with bounded connections (:func:`config`): keep-alive connections close after
:data:`KEEP_ALIVE` idle seconds, a connection that has not sent a whole request head within
:data:`HEAD_TIMEOUT` seconds is closed, a request head is at most :data:`MAX_HEAD` bytes, and at
:data:`MAX_CONNECTIONS` open connections the longest-idle one (no request in progress) is closed
to make room, so slow or half-open sockets cannot lock the server up; when every connection has a
request in progress, new requests get 503.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camlens.errors import CamlensValueError
from camlens.runs.settings import ModelSettings
from camlens.serve.app import LOOPBACK_HOSTS, create_app
from camlens.serve.runs import Runs
from camlens.serve.service import ModelService


@dataclass(frozen=True)
class Settings(ModelSettings):
    """What ``camlens serve`` was asked for: the model (the demo model by default; random weights
    are drawn from ``seed``, as ``camlens explain`` does), the run folders to browse, the address
    and the token, and the ``precision`` of the methods (as ``camlens explain --precision``)."""

    model: str = "demo"
    runs: Sequence[Path] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    precision: str = "auto"


#: Seconds an idle keep-alive connection stays open; seconds to send a whole request head.
KEEP_ALIVE = 5
HEAD_TIMEOUT = 10.0
#: Bytes of a request head; open connections at most (beyond: idle ones closed, else 503).
MAX_HEAD = 64 * 1024
MAX_CONNECTIONS = 200


def is_loopback(host: str) -> bool:
    """Whether ``host`` only answers this machine (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, token: str | None) -> str | None:
    """A warning for a non-loopback address (which then needs a token), else None; a token that
    is not printable ASCII (an HTTP header cannot carry it) is a ``CamlensValueError``."""
    if token is not None and not (token.isascii() and token.isprintable() and token.strip()):
        raise CamlensValueError(
            "--token must be printable ASCII (letters, digits, punctuation; it travels in an "
            f"HTTP header), got one with {_odd(token)}"
        )
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


def _odd(token: str) -> str:
    odd = [c for c in token if not (c.isascii() and c.isprintable())]
    return f"{odd[0]!r}" if odd else "only spaces"


def allowed_hosts(host: str) -> list[str] | None:
    """The Host headers answered when serving on ``host``: on loopback the loopback names and
    ``host`` itself (a page elsewhere cannot reach the server through a DNS name it controls:
    DNS rebinding); elsewhere any (the token guards the API)."""
    if not is_loopback(host):
        return ["*"]
    return [*LOOPBACK_HOSTS, *([] if host in LOOPBACK_HOSTS else [host.strip("[]")])]


def url(host: str, port: int, token: str | None = None) -> str:
    """The address to open (the token in the fragment, which the browser never sends)."""
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"#token={token}" if token else "")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (port 0: a free one); a port in use or an address
    that cannot be bound is a ``CamlensValueError`` saying so."""
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise CamlensValueError(f"port {port} on {host} is in use; choose --port") from None
        raise CamlensValueError(
            f"cannot listen on {host} port {port} ({error.strerror or error}); choose another "
            "--host or --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def protocol(head_timeout: float = HEAD_TIMEOUT) -> type:
    """uvicorn's h11 protocol with a request-head timeout of ``head_timeout`` seconds and room
    made at the connection cap (see the module's docstring)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Bounded(H11Protocol):
        _timer: Any = None
        _since = 0.0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()
            limit = self.config.limit_concurrency or MAX_CONNECTIONS
            while len(self.connections) >= limit and self._close_idlest():
                pass

        def connection_lost(self, exc: Exception | None) -> None:
            if self._timer is not None:
                self._timer.cancel()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def _idle(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._since = self.loop.time()
            self._timer = self.loop.call_later(head_timeout, self._expire)

        def _expire(self) -> None:
            self._timer = None
            if self._idle() and not self.transport.is_closing():
                self.transport.close()

        def _close_idlest(self) -> bool:
            idle = [
                c
                for c in self.connections
                if c is not self and isinstance(c, Bounded) and c._idle()
                if not c.transport.is_closing()
            ]
            if not idle:
                return False
            idlest = min(idle, key=lambda c: c._since)
            idlest.transport.close()
            self.connections.discard(idlest)  # connection_lost comes later
            return True

    return Bounded


def config(app: Any, *, head_timeout: float = HEAD_TIMEOUT, **options: Any) -> Any:
    """The ``uvicorn.Config`` camlens serves ``app`` with (``options``: uvicorn's, e.g. host,
    port, log_level, limit_concurrency)."""
    import uvicorn

    settings = {
        "http": protocol(head_timeout),
        "timeout_keep_alive": KEEP_ALIVE,
        "h11_max_incomplete_event_size": MAX_HEAD,
        "limit_concurrency": MAX_CONNECTIONS,
        "log_level": "warning",
        **options,
    }
    return uvicorn.Config(app, **settings)


def build(settings: Settings, **limits: Any) -> tuple[Any, list]:
    """The ASGI app for ``settings`` (the model loaded, the run folders read) and the runs that
    were skipped as unreadable (``(folder, reason)``)."""
    service = ModelService(settings.load(), precision=settings.precision)
    runs = None
    skipped: list = []
    if settings.runs:
        with warnings.catch_warnings():  # said on the terminal by launch
            warnings.simplefilter("ignore")
            runs = Runs(settings.runs)
        skipped = runs.skipped
    hosts = allowed_hosts(settings.host)
    app = create_app(service, runs=runs, token=settings.token, allowed_hosts=hosts, **limits)
    return app, skipped


def launch(settings: Settings, *, echo: Callable[[str], None] = print, **limits: Any) -> None:
    """Check the settings, take the port, load the model and serve until interrupted."""
    try:
        import uvicorn
    except ImportError as error:
        raise CamlensValueError(
            f'camlens serve needs the serve extra: pip install "camlens[serve]" ({error})'
        ) from error
    warning = check_host(settings.host, settings.token)
    sock = bind(settings.host, settings.port)
    try:
        if warning:
            echo(warning)
        app, skipped = build(settings, **limits)
        for folder, reason in skipped:
            echo(f"warning: run {folder!r} skipped: it cannot be read ({reason})")
        port = sock.getsockname()[1]
        echo(f"camlens serve: {settings.model} on {url(settings.host, port, settings.token)}")
        uvicorn.Server(config(app)).run(sockets=[sock])
    finally:
        sock.close()
