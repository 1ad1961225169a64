"""The ASGI app of ``camlens serve``: the JSON API (one router per concern) and the static page.

The page (``static/``) is a client of the API and nothing else. Errors are JSON
``{"error": "..."}``: 400 for a bad request (naming the field), 401 without the token, 404, 413 for
a body over the limit, 503 when the model queue is full, 500 (with the exception) when explaining
fails otherwise; the server keeps serving.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from camlens.errors import CamlensError
from camlens.serve.batcher import Busy
from camlens.serve.guards import Guard, TooLarge
from camlens.serve.uploads import MAX_BYTES, MAX_PIXELS

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
) -> Any:
    """The app serving ``service`` (a :class:`camlens.serve.service.ModelService`) and the run
    folders ``runs`` (a :class:`camlens.serve.runs.Runs`, or None)."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from camlens.serve.routes import explain, health, model
    from camlens.serve.routes import runs as runs_router

    app = FastAPI(title="camlens", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.service = service
    app.state.runs = runs
    app.state.max_pixels = max_pixels
    for router in (health.router, model.router, explain.router, runs_router.router):
        app.include_router(router, prefix="/api")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(CamlensError)
    async def bad_request(request: Request, exc: CamlensError) -> JSONResponse:
        return error(503 if isinstance(exc, Busy) else 400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'] if p not in ('body', 'query', 'path'))}: "
            f"{e['msg']}"
            for e in exc.errors()
        ]
        return error(400, "; ".join(problems))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, TooLarge):
            return error(413, str(exc.__cause__))
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, exc: TooLarge) -> JSONResponse:
        return error(413, str(exc))

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"the server failed on this request: {type(exc).__name__}: {exc}")

    static = resources.files("camlens.serve") / "static"
    app.mount("/", StaticFiles(directory=str(static), html=True), name="page")
    app.add_middleware(Guard, token=token, max_bytes=max_bytes)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS)
    return app
