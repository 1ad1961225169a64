"""``POST /api/explain``: one uploaded image explained, the map sent back as an 8-bit PNG."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field

router = APIRouter(tags=["explain"])


class ExplainForm(BaseModel):
    """The form fields beside the ``image`` file."""

    method: str = "gradcam"
    target: str = "pred"
    layer: str = "auto"


class TopClass(BaseModel):
    """One of the top-5: ``{"class", "name", "probability"}``."""

    model_config = ConfigDict(populate_by_name=True)

    index: int = Field(alias="class")
    name: str
    probability: float


class Explained(BaseModel):
    predicted: int
    top: list[TopClass]
    target: int
    target_name: str
    probability: float
    score: float
    layer: str
    method: str
    width: int
    height: int
    map: str


@router.post("/explain")
async def explain(
    request: Request,
    image: Annotated[UploadFile, File()],
    form: Annotated[ExplainForm, Form()],
) -> Explained:
    from starlette.concurrency import run_in_threadpool

    from camlens.serve.uploads import decode_image

    service = request.app.state.service
    data = await image.read()
    decoded = await run_in_threadpool(decode_image, data, request.app.state.max_pixels)
    checked = service.request(decoded, form.method, form.target, form.layer)
    answer = await asyncio.wrap_future(service.submit(checked))
    return Explained(**answer)
