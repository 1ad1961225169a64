"""The page in headless Chromium (Playwright, the system's Chromium): upload, click a class, see
the overlay change; display options re-render without a request. Screenshots go to the test's
folder, and into docs/images/ when CAMLENS_SCREENSHOTS=1."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from browsers import chromium
from needs import need
from PIL import Image

import camlens

sync_api = need("playwright.sync_api")  # every test here drives the browser
DOCS = Path(__file__).resolve().parents[2] / "docs" / "images"


def shoot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    if os.environ.get("CAMLENS_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / name, DOCS / name)


@pytest.fixture
def page(live):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(live)
            page.wait_for_selector("body[data-model=loaded]", timeout=30_000)
            yield page
            assert errors == []
        finally:
            browser.close()


def settled(page, at_least: int) -> None:
    """Wait until the page's latest round of requests (at least the ``at_least``-th) is shown."""
    page.wait_for_function(
        "n => window.camlens.state.request >= n && "
        "document.body.dataset.ready === String(window.camlens.state.request)",
        arg=at_least,
        timeout=30_000,
    )


def test_upload_click_a_class_and_the_overlay_changes(page, digit, tmp_path) -> None:
    upload = tmp_path / "digit-3.png"
    upload.write_bytes(digit)
    page.set_input_files("#file", str(upload))
    settled(page, 1)
    canvas = page.locator("#panels canvas")
    assert canvas.count() == 1 and canvas.get_attribute("data-method") == "gradcam"
    top = page.locator("#top button")
    assert top.count() == 5
    assert top.nth(0).get_attribute("class") == "chosen"
    assert top.nth(0).text_content().startswith("3 — ")  # the demo model reads the digit
    before = canvas.evaluate("c => c.toDataURL()")
    # the page's overlay is the library's (jet, alpha 0.5): the 64 x 64 sample needs no resize

    import camlens

    shown = canvas.evaluate(
        "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"
    )
    shown = np.array(shown, np.int16).reshape(64, 64, 4)[..., :3]
    values = page.evaluate("() => Array.from(window.camlens.state.results.gradcam.values)")
    heat = np.array(values, np.float32).reshape(64, 64) / 255
    image = np.array(Image.open(io.BytesIO(digit)).convert("RGB"))
    library = camlens.overlay(image, heat, colormap="jet", alpha=0.5).astype(np.int16)
    assert np.abs(shown - library).max() <= 1
    other = top.nth(1).get_attribute("data-class")
    top.nth(1).click()
    settled(page, 2)
    canvas = page.locator("#panels canvas")
    assert canvas.get_attribute("data-target") == other
    assert page.locator("#top button.chosen").get_attribute("data-class") == other
    assert canvas.evaluate("c => c.toDataURL()") != before

    # display options re-render in the browser: no request to the server
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    shown = canvas.evaluate("c => c.toDataURL()")
    page.select_option("#colormap", "viridis")
    page.fill("#alpha", "0.8")
    page.dispatch_event("#alpha", "input")
    assert canvas.evaluate("c => c.toDataURL()") != shown
    assert requests == []

    # two methods side by side, for the predicted class again
    page.locator("#top button").nth(0).click()
    settled(page, 3)
    page.check("#methods input[value=layercam]")
    settled(page, 4)
    page.check("#boxes")
    assert page.locator("#panels canvas").count() == 2
    shoot(page, tmp_path, "serve-explain.png")


def test_run_view_filters_opens_and_re_explains(page, run_folder, tmp_path) -> None:
    run = camlens.load_run(run_folder)
    page.click("#tab-runs")
    page.wait_for_selector("body[data-grid='0:0:32']", timeout=30_000)
    assert page.locator("#grid .tile").count() == 32
    mistakes = int((run.results["correct"] == False).sum())  # noqa: E712
    page.check("#f-mistakes")
    page.wait_for_selector(f"body[data-grid='0:0:{mistakes}']", timeout=30_000)
    assert page.locator("#grid .tile.wrong").count() == mistakes
    page.uncheck("#f-mistakes")
    page.select_option("#f-method", "cam")
    page.wait_for_selector("body[data-grid='0:0:16']", timeout=30_000)
    assert page.locator("#page-info").text_content() == "1–16 of 16"
    page.wait_for_function(
        "() => [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth)"
    )
    tile = page.locator("#grid .tile").nth(3)
    row = tile.get_attribute("data-row")
    tile.click()
    page.wait_for_selector(f"body[data-detail='{row}']", timeout=30_000)
    assert page.locator("#run-detail .panel").count() == 2  # gradcam and cam side by side
    shoot(page, tmp_path, "serve-runs.png")
    page.click("#re-explain")
    settled(page, 1)
    assert page.locator("#view-explain").is_visible()
    assert page.locator("#panels canvas").count() == 1
    predicted = str(run.results["predicted"][int(row)])
    assert page.locator("#top button.chosen").get_attribute("data-class") == predicted


def test_token_from_the_fragment_and_names_shown_as_text(
    cnn_service, serving, digit, tmp_path
) -> None:
    """Class names are the model's, shown as text: markup in them stays text. With a token the
    page sends it from the URL fragment; without it the page says why nothing works."""
    from camlens.runs.session import Session
    from camlens.serve import ModelService, create_app

    names = ["<img src=x onerror=window.pwned=1>", "b&amp;", "c", "d", "e"]
    session = Session.from_model(cnn_service.session.model, spec="toy", size=64, names=names)
    service = ModelService(session)
    app = create_app(service, token="s3cret", allowed_hosts=["*"])
    upload = tmp_path / "digit.png"
    upload.write_bytes(digit)
    try:
        with serving(app) as url, sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page()
                page.goto(url)
                page.wait_for_function("() => document.getElementById('status').className")
                assert page.text_content("#status") == (
                    "Cannot load the model description: missing or wrong X-Camlens-Token header"
                )
                page = browser.new_page()
                page.goto(f"{url}/#token=s3cret")
                page.wait_for_selector("body[data-model=loaded]", timeout=30_000)
                page.set_input_files("#file", str(upload))
                settled(page, 1)
                shown = page.locator("#top button").all_text_contents()
                assert sorted(text.split(" — ")[0] for text in shown) == sorted(names)
                assert page.locator("#top img").count() == 0
                assert page.evaluate("() => window.pwned") is None
            finally:
                browser.close()
    finally:
        service.close()


def test_an_answer_to_superseded_filters_is_not_shown(page) -> None:
    """Filters changed twice quickly: when the first request's answer arrives last, the grid and
    the pager still show the newer filters (a loaded server answered them out of order)."""
    held: list = []

    def hold_unfiltered(route) -> None:
        if "method=" in route.request.url or "mistakes=" in route.request.url:
            route.continue_()
        else:
            held.append(route)

    page.click("#tab-runs")
    page.wait_for_selector("body[data-grid='0:0:32']", timeout=30_000)
    page.check("#f-mistakes")
    page.wait_for_selector("body[data-grid]:not([data-grid='0:0:32'])", timeout=30_000)
    page.route("**/api/runs/*/rows?*", hold_unfiltered)
    page.uncheck("#f-mistakes")  # all 32 rows: held back
    page.wait_for_function("() => true")  # let the held request reach the route
    page.select_option("#f-method", "cam")  # 16 rows: answered at once
    page.wait_for_selector("body[data-grid='0:0:16']", timeout=30_000)
    assert len(held) == 1
    with page.expect_response(lambda answer: answer.request.url == held[0].request.url):
        held[0].continue_()
    page.wait_for_timeout(200)  # the late answer has been handled by now
    assert page.locator("#page-info").text_content() == "1–16 of 16"
    assert page.get_attribute("body", "data-grid") == "0:0:16"
    assert page.locator("#grid .tile").count() == 16
