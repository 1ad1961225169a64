"""``camlens serve``: starts alone with the demo model; refuses other hosts without a token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from needs import need
from typer.testing import CliRunner

from camlens.cli import app

need("fastapi")  # every test here serves the app
httpx = need("httpx")

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_other_host_needs_a_token() -> None:
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: --host 0.0.0.0 lets other machines reach the server and run the model: pass "
        "--token SECRET too (the page sends it), or keep the default 127.0.0.1"
    )


def test_bad_run_folder_is_a_usage_error(tmp_path) -> None:
    result = CliRunner().invoke(app, ["serve", "--run", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {str(tmp_path)!r} is not a camlens run folder (no run.json); camlens explain "
        "--out FOLDER writes one"
    )


def test_loopback_and_host_checks() -> None:
    from camlens.serve.launch import check_host, is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "192.168.1.4", "::", "example.org"]))
    assert check_host("127.0.0.1", None) is None
    assert check_host("0.0.0.0", "t").startswith("warning: serving on 0.0.0.0: anyone who can")


def test_serve_alone_starts_offline_with_the_demo_model() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "TORCH_HOME": "/nonexistent"}
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "camlens", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        info = None
        while time.perf_counter() - started < 60 and server.poll() is None:
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/api/model", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        seconds = time.perf_counter() - started
        assert info is not None, server.stdout.read() if server.poll() is not None else "no answer"
        assert (info["spec"], info["size"], info["auto"]) == ("demo", 64, "backbone.block5")
        assert seconds < 30, f"took {seconds:.1f} s to answer"
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=10)
    assert f"camlens serve: demo on http://127.0.0.1:{port}/" in output


def test_non_ascii_token_is_refused_at_start() -> None:
    result = CliRunner().invoke(app, ["serve", "--token", "s\u00e9cret"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: --token must be printable ASCII (letters, digits, punctuation; it travels in an "
        "HTTP header), got one with '\u00e9'"
    )


def test_port_in_use_is_said_before_anything_claims_the_server_is_up() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.perf_counter()
        result = CliRunner().invoke(app, ["serve", "--port", str(port)])
    assert result.exit_code == 2
    assert result.output == f"error: port {port} on 127.0.0.1 is in use; choose --port\n"
    assert time.perf_counter() - started < 5  # said before the model loads


def test_serving_on_another_loopback_address() -> None:
    import threading

    import uvicorn

    from camlens.serve.launch import Settings, allowed_hosts, bind, build, config, url

    assert url("::1", 8765, "t") == "http://[::1]:8765/#token=t"
    assert allowed_hosts("0.0.0.0") == ["*"]
    try:
        sock = bind("127.0.0.2", 0)
    except Exception as error:  # noqa: BLE001 (a system without 127.0.0.0/8 on loopback)
        pytest.skip(f"127.0.0.2 cannot be bound here: {error}")
    port = sock.getsockname()[1]
    assert url("127.0.0.2", port) == f"http://127.0.0.2:{port}/"
    assert "127.0.0.2" in allowed_hosts("127.0.0.2")
    app, skipped = build(Settings(host="127.0.0.2", port=port))
    server = uvicorn.Server(config(app, log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)
        answer = httpx.get(f"{url('127.0.0.2', port)}api/model", timeout=10)
        assert (answer.status_code, answer.json()["spec"], skipped) == (200, "demo", [])
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_serve_draws_random_weights_from_the_runs_seed():
    """``camlens serve --weights none --seed N`` builds the network ``camlens explain --seed N``
    explained, so re-explaining a run's image shows the run's maps."""
    import torch

    from camlens.runs.session import Session
    from camlens.serve.launch import Settings, build

    spec = dict(model="torchvision:resnet18", weights="none", size=64)
    server, _ = build(Settings(**spec, seed=3))
    served = server.state.service.session.model.state_dict()
    explained = Session.from_spec("torchvision:resnet18", "none", size=64, seed=3).model
    assert all(torch.equal(served[k], v) for k, v in explained.state_dict().items())
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert "--seed" in result.output
