"""ASGI middleware that guards the server: the Host header, the origin of state-changing requests,
NUL bytes, a token, a body size limit, and safe response headers. Every refusal is JSON
``{"error": ...}`` and echoes at most :data:`ECHO` characters of what the client sent."""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import urlsplit

TOKEN_HEADER = "x-camlens-token"
#: The most characters of a client's value that an error message repeats.
ECHO = 100
#: Methods that change state: refused from another origin.
UNSAFE = {"POST", "PUT", "DELETE", "PATCH"}
#: ``Sec-Fetch-Site`` values of a request the page itself (or the user, typing a URL) made.
SAME_SITE = {"same-origin", "none"}

#: The page loads only its own scripts and styles; maps and overlays are data: and blob: URLs.
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, cut to :data:`ECHO` characters (and the length
    said) when longer."""
    text = repr(value)
    if len(text) <= ECHO:
        return text
    return f"{text[:ECHO]}... ({len(str(value)):,} characters)"


async def _error(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None]:
    """``(host, port)`` of ``host[:port]``, the scheme's default port filled in."""
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return (netloc.lower(), None)
    default = {"http": 80, "https": 443}.get(scheme)
    return ((parts.hostname or "").lower(), port if port is not None else default)


def cross_origin(scope: dict, headers: dict[bytes, bytes]) -> str | None:
    """Why a state-changing request comes from another site (None: it does not, or it carries
    no browser origin headers, as curl and scripts send)."""
    if scope["method"] not in UNSAFE:
        return None
    site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
    if site and site not in SAME_SITE:
        return f"Sec-Fetch-Site: {shown(site)}"
    origin = headers.get(b"origin", b"").decode("latin-1")
    if not origin:
        return None
    parts = urlsplit(origin) if "://" in origin else None
    host = headers.get(b"host", b"").decode("latin-1")
    scheme = scope.get("scheme", "http")
    if parts is None or _host_port(parts.netloc, parts.scheme) != _host_port(host, scheme):
        return f"Origin {shown(origin)}, Host {shown(host)}"
    return None


def _allowed(host: str, allowed: list[str]) -> bool:
    if "*" in allowed:
        return True
    name = _host_port(host, "http")[0]
    return name in allowed or f"[{name}]" in allowed


class TooLarge(Exception):
    """The request body passed the limit while it was being read."""


class Guard:
    """In order: the ``Host`` header must be one of ``allowed_hosts`` ("*": any); a NUL byte in
    the path or query is 400; a POST, PUT, DELETE or PATCH from another origin (``Sec-Fetch-Site``
    other than same-origin/none, or an ``Origin`` whose host and port are not the ``Host``
    header's) is 403; ``/api/`` needs header ``X-Camlens-Token: TOKEN`` when a token is set
    (``/api/health`` excepted); request bodies over ``max_bytes`` get 413, checked on
    Content-Length and counted as they stream (chunked bodies too); every response gets
    :data:`HEADERS`."""

    def __init__(
        self, app: Any, *, token: str | None, max_bytes: int, allowed_hosts: list[str]
    ) -> None:
        self.app = app
        self.token = token
        self.max_bytes = max_bytes
        self.allowed_hosts = [host.lower() for host in allowed_hosts]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        refused = self._refused(scope, headers)
        if refused:
            await _error(send, *refused)
            return
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.max_bytes:
            await _error(send, 413, self._too_large(declared))
            return
        received = 0
        too_large: str | None = None
        started = False

        async def counted() -> dict:
            nonlocal received, too_large
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                too_large = self._too_large(received)
                raise TooLarge(too_large)
            return message

        async def secured(message: dict) -> None:
            nonlocal started
            if too_large is not None:  # whatever the app made of it, the answer is 413
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _error(send, 413, too_large)
                return
            if message["type"] == "http.response.start":
                started = True
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        try:
            await self.app(scope, counted, secured)
        except TooLarge:
            if not started:
                await _error(send, 413, str(too_large))

    def _refused(self, scope: dict, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        """``(status, message)`` of a request refused from its head alone, else None."""
        host = headers.get(b"host", b"").decode("latin-1")
        if not _allowed(host, self.allowed_hosts):
            return 400, (
                f"Host header {shown(host)} is not this server's "
                f"({', '.join(self.allowed_hosts)}): open the address camlens serve printed"
            )
        query = scope.get("query_string", b"")
        if "\x00" in scope["path"] or b"\x00" in query or b"%00" in query:
            return 400, "request: a NUL byte in the path or query is not allowed"
        why = cross_origin(scope, headers)
        if why:
            return 403, (
                f"cross-origin request refused ({why}): this server accepts {scope['method']} "
                "requests only from its own page or from clients that send no Origin"
            )
        path = scope["path"]
        if self.token and path.startswith("/api/") and path != "/api/health":
            given = headers.get(TOKEN_HEADER.encode(), b"")
            if not hmac.compare_digest(given, self.token.encode()):
                return 401, "missing or wrong X-Camlens-Token header"
        return None

    def _too_large(self, size: int) -> str:
        return f"request body: expected at most {self.max_bytes:,} bytes, got {size:,} or more"
