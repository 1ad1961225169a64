"""ASGI middleware that guards the API: a token, a body size limit, and safe response headers."""

from __future__ import annotations

import hmac
import json
from typing import Any

TOKEN_HEADER = "x-camlens-token"

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


async def _error(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": body})


class TooLarge(Exception):
    """The request body passed the limit while it was being read."""


class Guard:
    """``/api/`` needs header ``X-Camlens-Token: TOKEN`` when a token is set (``/api/health``
    excepted); request bodies over ``max_bytes`` get 413, checked on Content-Length and counted as
    they stream; every response gets :data:`HEADERS`."""

    def __init__(self, app: Any, *, token: str | None, max_bytes: int) -> None:
        self.app = app
        self.token = token
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = dict(scope["headers"])
        if self.token and path.startswith("/api/") and path != "/api/health":
            given = headers.get(TOKEN_HEADER.encode(), b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                await _error(send, 401, "missing or wrong X-Camlens-Token header")
                return
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.max_bytes:
            await _error(send, 413, self._too_large(declared))
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise TooLarge(self._too_large(received))
            return message

        async def secured(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, counted, secured)

    def _too_large(self, size: int) -> str:
        return f"request body: expected at most {self.max_bytes:,} bytes, got {size:,} or more"
