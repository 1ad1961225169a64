"""``GET /api/model``: what the served model is and what can be asked of it; ``POST
/api/prompts``: an image-text model's new classes."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel

from camlens.methods._registry import get
from camlens.methods._registry import methods as method_names
from camlens.visualize.render import colormap_table

router = APIRouter(tags=["model"])

#: The colormaps the page offers; their tables travel with the model description.
COLORMAPS = ("jet", "turbo", "viridis", "inferno", "magma", "gray")


class Layer(BaseModel):
    name: str
    kind: str
    shape: list[int]
    auto: bool


class Method(BaseModel):
    name: str
    uses_layer: bool
    paper: str


class ModelInfo(BaseModel):
    spec: str
    labels: list[str] | None
    classes: int
    size: int
    preprocess: str
    device: str
    layers: list[Layer]
    auto: str | None
    methods: list[Method]
    colormaps: dict[str, list[list[int]]]
    prompts: bool = False


class Prompts(BaseModel):
    """An image-text model's classes: its text prompts, in class order."""

    prompts: list[str]


class Classes(BaseModel):
    labels: list[str]
    classes: int


@router.post("/prompts")
def set_prompts(request: Request, body: Prompts) -> Classes:
    """Embed ``prompts`` as the served zero-shot model's classes; returns the new class list."""
    labels = request.app.state.service.set_prompts(body.prompts)
    return Classes(labels=labels, classes=len(labels))


@router.get("/model")
def model(request: Request) -> ModelInfo:
    service = request.app.state.service
    session = service.session
    tables = {}
    for name in COLORMAPS:
        tables[name] = np.round(colormap_table(name) * 255).astype(int).tolist()
    return ModelInfo(
        spec=session.spec,
        labels=session.names,
        classes=session.classes,
        size=session.size,
        preprocess=session.prepare.name,
        device=str(session.device),
        layers=[
            Layer(
                name=info.name,
                kind=info.kind,
                shape=[int(s) for s in info.shape[1:]],
                auto=info.name == service.auto,
            )
            for info in service.layers
        ],
        auto=service.auto,
        methods=[
            Method(name=name, uses_layer=get(name).uses_layer, paper=get(name).paper)
            for name in method_names(session.adapter)
        ],
        colormaps=tables,
        prompts=service.zero_shot,
    )
