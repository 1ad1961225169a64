"""``/api/runs``: the run folders given on the command line, their rows and their files."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from camlens.serve.guards import shown
from camlens.serve.runs import MAX_LIMIT, Filters

router = APIRouter(tags=["runs"])


class RowsQuery(BaseModel):
    """Filters, sort and page of ``GET /api/runs/{run}/rows``."""

    method: str | None = None
    predicted: int | None = None
    true: int | None = None
    mistakes: bool = False
    min_probability: float | None = Field(None, ge=0, le=1)
    max_probability: float | None = Field(None, ge=0, le=1)
    path: str | None = None
    sort: str = "row"
    descending: bool = False
    offset: int = Field(0, ge=0)
    limit: int = Field(60, ge=1, le=MAX_LIMIT)


def _runs(request: Request) -> Any:
    return request.app.state.runs


@router.get("/runs")
def listing(request: Request) -> list[dict[str, Any]]:
    runs = _runs(request)
    return [] if runs is None else runs.listing()


def _needed(request: Request) -> Any:
    runs = _runs(request)
    if runs is None:
        raise HTTPException(404, "no run folders: start camlens serve with --run FOLDER")
    return runs


@router.get("/runs/{run}")
def summary(request: Request, run: int) -> dict[str, Any]:
    return _needed(request).summary(run)


@router.get("/runs/{run}/rows")
def rows(request: Request, run: int, query: Annotated[RowsQuery, Query()]) -> dict[str, Any]:
    return _needed(request).rows(run, Filters(**query.model_dump()))


@router.get("/runs/{run}/rows/{row}/image")
def original(request: Request, run: int, row: int) -> Response:
    try:
        data = _needed(request).original(run, row, request.app.state.max_pixels)
    except FileNotFoundError as error:
        raise HTTPException(404, f"row {row}'s image is gone: {error}") from None
    return Response(data, media_type="image/png")


@router.get("/runs/{run}/files/{path:path}")
def file(request: Request, run: int, path: str) -> FileResponse:
    try:
        found = _needed(request).file(run, path)
    except FileNotFoundError:
        raise HTTPException(404, f"no file {shown(path)} in run {run}") from None
    return FileResponse(found)
