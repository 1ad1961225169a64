"""The system's Chromium for the browser tests: without it they skip, or fail in CI."""

from __future__ import annotations

import shutil

from needs import missing

CHROMIUM = next(
    (
        shutil.which(name)
        for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
        if shutil.which(name)
    ),
    None,
)


def chromium() -> str:
    """The path of the system's Chromium; without one the test skips (fails in CI)."""
    if CHROMIUM is None:
        missing("Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    return CHROMIUM
