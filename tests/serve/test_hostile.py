"""``camlens serve`` under hostile use, in process: other origins, EPS uploads, the decode pool,
and every error answered as JSON ``{"error"}`` without echoing what was sent."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time

import numpy as np
import pytest
import torch
from needs import need

from camlens.runs.session import resize_unit
from camlens.serve import create_app
from camlens.serve.uploads import Decoders

TestClient = need("fastapi.testclient").TestClient  # every test here serves the app

#: A PostScript file that loops for ever once Ghostscript runs it (73 bytes).
LOOPING_EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n{ 1 pop } loop\nshowpage\n"


def photo(seed: int, height: int = 90, width: int = 120) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


def explain(client: TestClient, png, **headers: str):
    return client.post("/api/explain", files={"image": ("x.png", png(photo(1)))}, headers=headers)


def test_state_changing_requests_from_another_origin_are_403(client, png) -> None:
    evil = explain(client, png, origin="http://evil.example")
    assert (evil.status_code, evil.json()) == (
        403,
        {
            "error": "cross-origin request refused (Origin 'http://evil.example', Host "
            "'127.0.0.1'): this server accepts POST requests only from its own page or from "
            "clients that send no Origin"
        },
    )
    cross = explain(client, png, **{"sec-fetch-site": "cross-site"})
    assert cross.status_code == 403 and "Sec-Fetch-Site: 'cross-site'" in cross.json()["error"]
    assert explain(client, png, **{"sec-fetch-site": "same-site"}).status_code == 403
    # another port of the same host is another origin
    assert explain(client, png, origin="http://127.0.0.1:9999").status_code == 403
    assert explain(client, png, origin="null").status_code == 403
    # the page's own requests, and clients that send neither header (curl, scripts), pass
    page = {"origin": "http://127.0.0.1", "sec-fetch-site": "same-origin"}
    assert explain(client, png, **page).status_code == 200
    assert explain(client, png).status_code == 200
    # reading is allowed from anywhere (the Host check guards against DNS rebinding)
    answer = client.get("/api/model", headers={"origin": "http://evil.example"})
    assert answer.status_code == 200


def test_eps_upload_refused_fast_without_ghostscript(client, monkeypatch) -> None:
    started: list = []

    def no_programs(*args, **kwargs):
        started.append(args)
        raise AssertionError("a program was started")

    monkeypatch.setattr(subprocess, "Popen", no_programs)
    begin = time.perf_counter()
    answer = client.post("/api/explain", files={"image": ("x.eps", LOOPING_EPS)})
    assert (answer.status_code, answer.json()) == (
        415,
        {"error": "image: not a supported image format (EPS)"},
    )
    assert time.perf_counter() - begin < 2 and started == []


def test_uploads_are_decoded_to_the_model_input_in_a_bounded_pool(monkeypatch, png) -> None:
    """At most ``workers`` decode at once; each request keeps only its resized input."""
    import camlens.serve.uploads as uploads

    running, most = 0, 0
    lock = threading.Lock()
    real = uploads.decode_for_model

    def counted(*args):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        try:
            return real(*args)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(uploads, "decode_for_model", counted)
    images = [photo(seed, 300, 400) for seed in range(6)]
    decoders = Decoders(workers=2, timeout=30)

    async def all_at_once() -> list[torch.Tensor]:
        jobs = (decoders.decode(png(image), 64, 10**6) for image in images)
        return await asyncio.gather(*jobs)

    try:
        units = asyncio.run(all_at_once())
    finally:
        decoders.close()
    assert most == 2
    for image, unit in zip(images, units):
        assert torch.equal(unit, resize_unit(image, 64))  # as camlens explain resizes


def test_a_slow_decode_is_a_json_503(demo_service, monkeypatch, png) -> None:
    import camlens.serve.uploads as uploads

    release = threading.Event()

    def stuck(*args):
        release.wait(10)
        raise AssertionError("not reached in time")

    monkeypatch.setattr(uploads, "decode_for_model", stuck)
    client = TestClient(create_app(demo_service, decode_timeout=0.2), base_url="http://127.0.0.1")
    try:
        answer = explain(client, png)
    finally:
        release.set()
    assert (answer.status_code, answer.json()) == (
        503,
        {
            "error": "image: not decoded within 0.2 s (the server is busy decoding other uploads);"
            " try again"
        },
    )


MULTIPART = "multipart/form-data; boundary=camlens"


def chunked(size: int):
    """A body sent in chunks, with no Content-Length."""
    yield b"--camlens\r\nContent-Disposition: form-data; name=image; filename=x.png\r\n\r\n"
    for _ in range(size // 65536):
        yield b"x" * 65536


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "message"),
    [
        ("GET", "/api/nope", {}, 404, "not found: GET '/api/nope'"),
        ("GET", "/nope.html", {}, 404, "not found: GET '/nope.html'"),
        (
            "POST",
            "/api/health",
            {},
            405,
            "method not allowed: POST '/api/health' (allowed: GET)",
        ),
        (
            "GET",
            "/api/explain",
            {},
            405,
            "method not allowed: GET '/api/explain' (allowed: POST)",
        ),
        ("DELETE", "/", {}, 405, "method not allowed: DELETE '/' (allowed: GET, HEAD)"),
        (
            "GET",
            "/api/runs/0",
            {},
            404,
            "no run folders: start camlens serve with --run FOLDER",
        ),
        (
            "GET",
            "/api/runs/abc",
            {},
            400,
            "run: Input should be a valid integer, unable to parse string as an integer",
        ),  # fmt: skip
        ("POST", "/api/explain", {"data": {"method": "gradcam"}}, 400, "image: Field required"),
        (
            "GET",
            "/api/runs/0/files/a%00b.png",
            {},
            400,
            "request: a NUL byte in the path or query is not allowed",
        ),
        (
            "GET",
            "/api/runs/0/rows?path=a%00b",
            {},
            400,
            "request: a NUL byte in the path or query is not allowed",
        ),
        (
            "POST",
            "/api/explain",
            {"content": chunked(2 * 1024 * 1024), "headers": {"content-type": MULTIPART}},
            413,
            "request body: expected at most 1,048,576 bytes, got 2,097,225 or more",
        ),
        (
            "POST",
            "/api/explain",
            {"files": {"image": ("x.png", b"x" * 100)}, "data": {"target": "t" * 1_000_000}},
            400,
            "target: expected at most 300 characters, got 1,000,000",
        ),
        (
            "POST",
            "/api/explain",
            {"files": {"image": ("x.png", b"x" * 100)}, "data": {"layer": "a\x00b"}},
            400,
            "layer: a NUL byte is not allowed",
        ),
    ],
)
def test_every_error_is_json_with_the_right_code(
    demo_service, method, url, kwargs, status, message
) -> None:
    app = create_app(demo_service, max_bytes=1024 * 1024)
    client = TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)
    answer = client.request(method, url, **kwargs)
    assert (answer.status_code, answer.json()) == (status, {"error": message})
    assert answer.headers["content-type"] == "application/json"
    assert "detail" not in answer.text
    # the server keeps serving
    assert client.get("/api/health").json() == {"status": "ok"}


def test_long_values_are_not_echoed(demo_service, run_folder, png) -> None:
    from camlens.serve.runs import Runs

    client = TestClient(create_app(demo_service, runs=Runs([run_folder])), "http://127.0.0.1")
    sort = "s" * 5000
    answer = client.get("/api/runs/0/rows", params={"sort": sort})
    assert (answer.status_code, answer.json()) == (
        400,
        {
            "error": "sort: expected one of row, probability, target_probability, predicted, "
            f"true, stem, got {repr(sort)[:100]}... (5,000 characters)"
        },
    )
    layer = "l" * 299
    answer = client.post(
        "/api/explain", files={"image": ("x.png", png(photo(1)))}, data={"layer": layer}
    )
    assert answer.status_code == 400 and len(answer.text) < 600
    assert answer.json()["error"].endswith(f"got {repr(layer)[:100]}... (299 characters)")
    answer = client.get(f"/api/runs/0/files/{'f' * 3000}.png")
    assert (answer.status_code, answer.json()) == (
        404,
        {"error": f"no file {repr('f' * 3000 + '.png')[:100]}... (3,004 characters) in run 0"},
    )
