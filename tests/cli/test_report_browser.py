"""report.html in a real browser (headless Chromium through Playwright): a CLI run's images all
load, and a run of 3,000 rows opens, filters and pages."""

from __future__ import annotations

import io

import numpy as np
import pytest
from browsers import launched
from PIL import Image
from typer.testing import CliRunner

from camlens.cli import app
from camlens.runs.records import Record
from camlens.runs.writer import RunWriter

#: In the page: how many images there are and how many did not decode.
BROKEN = """() => { const im = Array.from(document.images);
  return [im.length, im.filter(i => !(i.complete && i.naturalWidth > 0)).length]; }"""


@pytest.fixture(scope="module")
def browser():
    with launched() as chromium:
        yield chromium


def open_page(browser, file, width=1280, height=1000):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(file.as_uri())
    page.wait_for_load_state("load")
    return page


def test_cli_report_loads_every_image(browser, images, model_args, tmp_path):
    out = tmp_path / "out"
    args = ["explain", str(images), *model_args, "--method", "cam,gradcam++", "--out", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 1  # the corrupt JPEG (the text file: ignored)
    page = open_page(browser, out / "report.html")
    # the first method's rows: 3 cards, each the original (linked, not copied) and its overlay
    assert page.inner_text("#count") == "3 of 6 rows"
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    assert page.evaluate(BROKEN) == [6, 0]
    page.select_option("#method", "gradcam++")  # a name that needs URL encoding
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    assert page.evaluate(BROKEN) == [6, 0]
    assert "1 input(s) skipped" in page.inner_text("body")
    grid = Image.open(io.BytesIO(page.locator("#grid").screenshot()))
    shot = np.asarray(grid.convert("HSV"))
    vivid = (shot[..., 1] > 150) & (shot[..., 2] > 100)  # the jet overlays are on screen
    assert vivid.mean() > 0.1


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    """3,000 rows (1,500 images x 2 methods, a fifth of them wrong) sharing a few small files."""
    out = tmp_path_factory.mktemp("big")
    source = out.parent / "inputs"
    source.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(source / "photo.jpg")
    writer = RunWriter(out, {"methods": ["gradcam", "cam"], "labels": ["cat", "dog", "fox"]})
    overlay = {f"overlays/{m}.jpg": (source / "photo.jpg").read_bytes() for m in ("gradcam", "cam")}
    classes = ["cat", "dog", "fox"]
    for start in range(0, 1500, 250):
        records = []
        for i in range(start, start + 250):
            truth, predicted = i % 3, (i % 3 if i % 5 else (i + 1) % 3)
            for method in ("gradcam", "cam"):
                records.append(Record({
                    "path": str(source / "photo.jpg").replace("photo", f"photo{i:04d}"),
                    "image": None, "width": 64, "height": 48, "method": method,
                    "layer": "layer4", "predicted": predicted, "probability": (i % 100) / 100,
                    "predicted_name": classes[predicted], "target": predicted,
                    "target_name": classes[predicted], "true_label": truth,
                    "true_name": classes[truth], "correct": truth == predicted,
                    "map": f"maps/{method}.png", "overlay": f"overlays/{method}.jpg", "boxes": [],
                }, overlay if i == 0 else {}))  # fmt: skip
        writer.write(records)
    writer.finish("3,000 rows")
    for i in range(1500):  # the report links each original image
        (source / f"photo{i:04d}.jpg").symlink_to(source / "photo.jpg")
    return out


def test_a_run_of_3000_rows_filters_and_pages(browser, big_run, tmp_path):
    page = open_page(browser, big_run / "report.html")
    assert page.inner_text("#count") == "1500 of 3000 rows"
    assert page.inner_text("#page") == "page 1 of 32"
    assert page.locator("#grid .card").count() == 48  # one page drawn, not 3,000 cards
    text = page.inner_text("body")
    assert "80.0% of 1,500" in text and "1,500" in text  # accuracy over the images
    page.check("#wrong")
    assert page.inner_text("#count") == "300 of 3000 rows"
    assert page.locator("#grid .card.wrong").count() == 48
    page.select_option("#truth", "dog")
    assert page.inner_text("#count") == "100 of 3000 rows"
    page.fill("#lo", "50")
    page.dispatch_event("#lo", "change")
    assert page.inner_text("#count") == "50 of 3000 rows"
    page.uncheck("#wrong")
    page.select_option("#method", "")
    page.fill("#lo", "0")
    page.dispatch_event("#lo", "change")
    assert page.inner_text("#count") == "1000 of 3000 rows"  # dog, both methods
    page.click("#next")
    assert page.inner_text("#page") == "page 2 of 21"
    first = page.locator("#grid .card p").first.inner_text()
    assert "predicted" in first and "true dog" in first
    page.wait_for_function("Array.from(document.images).slice(0, 8).every(i => i.complete)")
    assert page.evaluate(BROKEN)[0] == 96
    page.screenshot(path=str(tmp_path / "report-3000.png"))
