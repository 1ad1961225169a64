"""uvicorn as ``camlens serve`` runs it, on loopback: half-open and slow connections, chunked
bodies over the limit."""

from __future__ import annotations

import contextlib
import socket
import time

from needs import need

from camlens.serve import create_app
from camlens.serve.launch import MAX_CONNECTIONS

need("fastapi")  # every test here serves the app
httpx = need("httpx")


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@contextlib.contextmanager
def half_open(port: int, count: int):
    """``count`` connections that each send the start of a request line and then wait."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /api/heal")
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_400_half_open_connections_do_not_stop_health(demo_service, serving) -> None:
    assert MAX_CONNECTIONS == 200
    with serving(create_app(demo_service)) as url, half_open(port_of(url), 400):
        started = time.perf_counter()
        answer = httpx.get(f"{url}/api/health", timeout=2)
        assert answer.json() == {"status": "ok"}
        assert time.perf_counter() - started < 2


def test_a_request_head_not_sent_in_time_is_closed(demo_service, serving) -> None:
    with serving(create_app(demo_service), head_timeout=0.5) as url:
        with half_open(port_of(url), 1) as (sock,):
            started = time.perf_counter()
            assert sock.recv(100) == b""  # closed by the server
            assert 0.4 < time.perf_counter() - started < 4
        # a client that sends its request in time is answered
        assert httpx.get(f"{url}/api/health", timeout=5).json() == {"status": "ok"}


def test_chunked_body_over_the_limit_is_413(demo_service, serving) -> None:
    def body():
        yield b"--camlens\r\nContent-Disposition: form-data; name=image; filename=x.png\r\n\r\n"
        for _ in range(64):
            yield b"x" * 65536

    with serving(create_app(demo_service, max_bytes=1024 * 1024)) as url:
        answer = httpx.post(
            f"{url}/api/explain",
            content=body(),
            headers={"content-type": "multipart/form-data; boundary=camlens"},
            timeout=30,
        )
    assert answer.status_code == 413
    assert answer.json()["error"].startswith("request body: expected at most 1,048,576 bytes, got")
