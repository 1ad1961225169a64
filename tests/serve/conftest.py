"""Fixtures of the serve tests: served models, an ASGI test client, a live server on loopback."""

from __future__ import annotations

import contextlib
import io
import threading
import time

import numpy as np
import pytest
from needs import need
from PIL import Image


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="package")
def png():
    """uint8 RGB array -> PNG file bytes."""
    return _png


@pytest.fixture(scope="package")
def demo_service():
    from camlens.runs.session import Session
    from camlens.serve import ModelService

    service = ModelService(Session.from_spec("demo"))
    yield service
    service.close()


@pytest.fixture(scope="package")
def cnn_service():
    """toy_models.SmallCNN through a factory spec: ImageNet mean/std preprocessing, 64 px."""
    from camlens.runs.session import Session
    from camlens.serve import ModelService

    service = ModelService(Session.from_spec("toy_models:SmallCNN", size=64))
    yield service
    service.close()


@pytest.fixture
def client(demo_service):
    TestClient = need("fastapi.testclient").TestClient  # noqa: N806

    from camlens.serve import create_app

    return TestClient(create_app(demo_service), base_url="http://127.0.0.1")


@contextlib.contextmanager
def _serving(app, **options):
    """``app`` under uvicorn on 127.0.0.1 (a free port) with camlens serve's settings
    (``options``: uvicorn's and ``head_timeout``), in a thread: its base URL."""
    need("fastapi")
    uvicorn = need("uvicorn")

    from camlens.serve.launch import config

    server = uvicorn.Server(config(app, host="127.0.0.1", port=0, log_level="error", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="package")
def serving():
    """A context manager: an app served on loopback while the block runs, its base URL."""
    return _serving


@pytest.fixture(scope="package")
def run_folder(tmp_path_factory):
    """A real run: the demo model on its 16 samples (class folders), gradcam and cam."""
    from typer.testing import CliRunner

    from camlens.cli import app
    from camlens.models.checkpoint import demo_path

    out = tmp_path_factory.mktemp("run") / "demo-run"
    samples = demo_path() / "samples"
    args = ["explain", str(samples), str(samples / "boxes.csv"), "--model", "demo"]
    args += ["--method", "gradcam,cam", "-q"]
    args += ["--labels-from-folders", "--copy-images", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # boxes.csv, named on its own, is not an image
    return out


@pytest.fixture(scope="package")
def live(demo_service, run_folder):
    """The demo model and the demo run, served on loopback."""
    from camlens.serve import create_app
    from camlens.serve.runs import Runs

    with _serving(create_app(demo_service, runs=Runs([run_folder]))) as url:
        yield url


@pytest.fixture(scope="package")
def digit() -> bytes:
    """A bundled demo sample (a cluttered digit 3), as uploaded."""
    from camlens.models.checkpoint import demo_path

    return (demo_path() / "samples" / "3").glob("*.png").__next__().read_bytes()
