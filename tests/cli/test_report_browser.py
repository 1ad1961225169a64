"""report.html in a real browser: headless Chromium loads every image of the gallery."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
from browsers import CHROMIUM, needs_chromium
from PIL import Image
from typer.testing import CliRunner

from camlens.cli import app

pytestmark = needs_chromium

#: Appended to a copy of the page: on load, count the images that did not decode.
CHECK = (
    "<script>window.addEventListener('load',function(){var im=document.images,bad=0;"
    "for(var i=0;i<im.length;i++){if(!(im[i].complete&&im[i].naturalWidth>0)){bad++;}}"
    "document.title='IMAGES '+im.length+' BROKEN '+bad;});</script>"
)


def chromium(profile, *args: str) -> str:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def verdict(profile, page) -> str:
    dom = chromium(profile, "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    return re.search(r"<title>([^<]*)</title>", dom).group(1)


@pytest.fixture
def report(images, model_args, tmp_path):
    out = tmp_path / "out"
    args = ["explain", str(images), *model_args, "--method", "cam,gradcam++", "--no-panel"]
    args += ["--out", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 1  # the corrupt and the text file
    return out / "report.html"


def test_gallery_loads_every_image(report, tmp_path):
    page = report.read_text()
    checked = report.with_name("check.html")
    checked.write_text(page.replace("</body>", CHECK + "</body>"))
    # 3 images, each the original and one overlay per method ("gradcam++" needs URL encoding)
    assert verdict(tmp_path / "profile", checked) == "IMAGES 9 BROKEN 0"
    # the check itself sees a missing image
    checked.write_text(page.replace("</body>", '<img src="missing.png">' + CHECK + "</body>"))
    assert verdict(tmp_path / "profile", checked) == "IMAGES 10 BROKEN 1"

    shot = tmp_path / "report.png"
    chromium(
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,1400",
        "--hide-scrollbars",
        report.as_uri(),
    )
    with Image.open(shot) as picture:
        pixels = np.asarray(picture.convert("HSV"))
    assert pixels.shape[:2] == (1400, 1280)
    # the jet overlays are on screen: a good share of strongly saturated, bright pixels
    vivid = (pixels[..., 1] > 150) & (pixels[..., 2] > 100)
    assert vivid.mean() > 0.05
