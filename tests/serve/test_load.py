"""A bounded load test on loopback: 40 concurrent explains against uvicorn, all answered."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from needs import need

need("fastapi")  # every test here serves the app
httpx = need("httpx")


def test_forty_concurrent_explains_all_answered(live, demo_service, png) -> None:
    rng = np.random.default_rng(7)
    uploads = [png((rng.random((48, 48, 3)) * 255).astype(np.uint8)) for _ in range(40)]
    methods = ["gradcam", "layercam"]
    batches_before = len(demo_service.batcher.batches)

    async def explain(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post(
            "/api/explain",
            files={"image": (f"{i}.png", uploads[i])},
            data={"method": methods[i % 2]},
        )

    async def storm() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live, timeout=120) as client:
            return await asyncio.gather(*(explain(client, i) for i in range(40)))

    started = time.perf_counter()
    answers = asyncio.run(storm())
    seconds = time.perf_counter() - started
    assert [a.status_code for a in answers] == [200] * 40
    assert [a.json()["method"] for a in answers] == [methods[i % 2] for i in range(40)]
    sizes = demo_service.batcher.batches[batches_before:]
    assert sum(sizes) == 40 and max(sizes) > 1  # requests shared forwards
    assert seconds < 120
