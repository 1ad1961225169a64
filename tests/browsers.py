"""The system's Chromium for the browser tests: without it they skip, or fail in CI."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from needs import missing, need

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


@contextmanager
def launched() -> Iterator[Any]:
    """Headless Chromium through Playwright, closed on exit (without either the test skips, or
    fails in CI); a module-scoped fixture is ``with launched() as browser: yield browser``."""
    playwright = need("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
