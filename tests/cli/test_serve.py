"""``camlens serve``: starts alone with the demo model; refuses other hosts without a token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from camlens.cli import app

pytest.importorskip("fastapi")
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
