"""What some tests need beyond the core install: an optional library or the system's Chromium.

Without it a test skips on a developer's machine but fails in CI (``CI=true``): .ci/run installs
everything, so a skip there would be a test that silently never ran.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, NoReturn

import pytest

IN_CI = os.environ.get("CI") == "true"


def missing(what: str) -> NoReturn:
    """Skip the calling test (or module) for want of ``what``; fail it in CI."""
    if IN_CI:
        pytest.fail(f"{what}; CI installs it (.ci/run), so this test must run", pytrace=False)
    pytest.skip(what, allow_module_level=True)


def need(module: str) -> Any:
    """``module`` (a dotted name) imported; without it, :func:`missing`."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing(f"{module} is not installed ({error}; pip install -e '.[test]')")
