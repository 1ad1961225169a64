"""The ASGI app of ``camlens serve``: the JSON API (one router per concern) and the static page.

The page (``static/``) is a client of the API and nothing else. Every error is JSON
``{"error": "..."}`` and repeats at most about 100 characters of what the client sent: 400 for a
bad request (naming the field; a NUL byte too), 401 without the token, 403 for a state-changing
request from another origin, 404, 405, 413 for a body over the limit (chunked too), 415 for an
upload that is not an image of a served format, 503 when the model queue is full or an upload
could not be decoded in time, 500 (with the exception) when explaining fails otherwise; the
server keeps serving.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

from camlens.errors import CamlensError
from camlens.serve.batcher import Busy
from camlens.serve.guards import Guard, shown
from camlens.serve.uploads import (
    DECODE_TIMEOUT,
    DECODERS,
    MAX_BYTES,
    MAX_PIXELS,
    Decoders,
    TimedOut,
    Unsupported,
)

if TYPE_CHECKING:  # fastapi (and starlette) are the serve extra's
    from starlette.types import Receive, Scope, Send

#: Host headers answered when no token is set: a page elsewhere cannot reach a loopback server
#: through a DNS name it controls (DNS rebinding).
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


def create_app(
    service: Any,
    *,
    runs: Any = None,
    token: str | None = None,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    allowed_hosts: list[str] | None = None,
    decoders: int = DECODERS,
    decode_timeout: float = DECODE_TIMEOUT,
) -> Any:
    """The app serving ``service`` (a :class:`camlens.serve.service.ModelService`) and the run
    folders ``runs`` (a :class:`camlens.serve.runs.Runs`, or None). Uploads are decoded by
    ``decoders`` threads, each request waiting at most ``decode_timeout`` seconds for it."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.routing import APIRoute
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException

    from camlens.serve.routes import explain, health, model
    from camlens.serve.routes import runs as runs_router

    app = FastAPI(title="camlens", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.service = service
    app.state.runs = runs
    app.state.max_pixels = max_pixels
    app.state.decoders = Decoders(decoders, decode_timeout)
    routers = (health.router, model.router, explain.router, runs_router.router)
    for router in routers:
        app.include_router(router, prefix="/api")

    def error(status: int, message: str, headers: Any = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(CamlensError)
    async def bad_request(request: Request, exc: CamlensError) -> JSONResponse:
        status = 503 if isinstance(exc, (Busy, TimedOut)) else 400
        return error(415 if isinstance(exc, Unsupported) else status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'] if p not in ('body', 'query', 'path'))}: "
            f"{e['msg']}"
            for e in exc.errors()
        ]
        return error(400, "; ".join(problems)[:1000])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        where = f"{request.method} {shown(request.url.path)}"
        message = {
            404: f"not found: {where}",
            405: f"method not allowed: {where} (allowed: "
            f"{(exc.headers or {}).get('Allow', 'GET, HEAD')})",
        }.get(exc.status_code, str(exc.detail))
        if exc.status_code == 404 and exc.detail != "Not Found":
            message = str(exc.detail)
        return error(exc.status_code, message, exc.headers)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"the server failed on this request: {type(exc).__name__}: {exc}")

    static = StaticFiles(directory=str(resources.files("camlens.serve") / "static"), html=True)

    async def page(scope: Scope, receive: Receive, send: Send) -> None:
        """The page's files; below ``/api/`` a route's 405 (with ``Allow``), else 404."""
        if scope["path"].startswith("/api/"):
            below = scope["path"].removeprefix("/api")
            allowed = sorted(
                method
                for router in routers
                for route in router.routes
                if isinstance(route, APIRoute) and route.path_regex.match(below)
                for method in route.methods or ()
            )
            if allowed:
                raise HTTPException(405, headers={"Allow": ", ".join(allowed)})
            raise HTTPException(404)
        await static(scope, receive, send)

    app.mount("/", page, name="page")
    app.add_middleware(
        Guard, token=token, max_bytes=max_bytes, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS
    )
    return app
