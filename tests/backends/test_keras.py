"""The Keras adapter (camlens/backends/keras.py) on the TensorFlow, torch and JAX backends.

Keras fixes its backend once per process, so the checks in ``keras_cases.py`` run in one child
``pytest`` per backend, started together with ``KERAS_BACKEND`` set; each test here waits for its
child and fails with the child's report. Run one backend's checks directly with
``KERAS_BACKEND=torch pytest tests/backends/keras_cases.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from needs import missing

BACKENDS = ("tensorflow", "torch", "jax")
ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).with_name("keras_cases.py")


@pytest.fixture(scope="module")
def children():
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("tensorflow") is None:
        missing("keras and tensorflow are not installed (pip install -e '.[test]')")
    started = {}
    with contextlib.ExitStack() as stack:
        for backend in BACKENDS:
            log = stack.enter_context(tempfile.TemporaryFile(mode="w+"))
            env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
            command = [sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider"]
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
            started[backend] = (process, log)
        yield started
        for process, _ in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_backend(children, backend):
    process, log = children[backend]
    process.wait(timeout=900)
    log.seek(0)
    report = log.read()
    assert process.returncode == 0, f"KERAS_BACKEND={backend}:\n{report[-8000:]}"
    assert " passed" in report and "skipped" not in report, report[-2000:]
