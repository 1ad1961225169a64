"""``POST /api/explain``: one uploaded image explained, the map sent back as an 8-bit PNG."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from camlens.errors import CamlensValueError

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
    target_name: str  # "output:K" for an output value
    probability: float | None  # none for an output value (a model that is not a classifier)
    score: float
    layer: str
    method: str
    width: int
    height: int
    map: str
    precision: str  # the precision the method ran in ("fp32", "bf16"...)


#: The longest ``method``, ``target`` or ``layer`` value taken (a class or layer name fits).
MAX_FIELD = 300


def _check_fields(form: ExplainForm) -> None:
    """A field too long to be a name, or holding a NUL byte, is refused without echoing it."""
    for name, value in form.model_dump().items():
        if len(value) > MAX_FIELD:
            raise CamlensValueError(
                f"{name}: expected at most {MAX_FIELD} characters, got {len(value):,}"
            )
        if "\x00" in value:
            raise CamlensValueError(f"{name}: a NUL byte is not allowed")


@router.post("/explain")
async def explain(
    request: Request,
    image: Annotated[UploadFile, File()],
    form: Annotated[ExplainForm, Form()],
) -> Explained:
    state = request.app.state
    service = state.service
    _check_fields(form)
    data = await image.read()
    unit = await state.decoders.decode(data, service.session.size, state.max_pixels)
    del data  # only the image at the model's input side waits for the model
    checked = service.request(unit, form.method, form.target, form.layer)
    answer = await asyncio.wrap_future(service.submit(checked))
    return Explained(**answer)
