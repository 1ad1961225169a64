"""The documentation's gallery is current: one picture per registered method, and the maps it
shows are the ones camlens computes today (checked from gallery.json, without re-rendering)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from repo_scripts import load_script

import camlens

ROOT = Path(__file__).resolve().parents[2]


gallery = load_script("gallery")
STALE = "the gallery is stale: run python scripts/gallery.py"
DEMO = camlens.load_model("demo")  # a CNN: the gallery shows the methods that apply to it


def test_one_picture_per_method_and_the_page_lists_them():
    methods = camlens.methods(DEMO)
    assert sorted(p.stem for p in gallery.OUT.glob("*.png")) == sorted(methods), STALE
    for method in methods:
        with Image.open(gallery.OUT / f"{method}.png") as picture:
            assert picture.format == "PNG" and picture.size[0] == 800  # four 2-inch cells
    assert gallery.PAGE.read_text() == gallery.page(methods), STALE


def test_the_pictures_show_todays_maps():
    record = json.loads((gallery.OUT / "gallery.json").read_text())
    samples = [p.relative_to(ROOT / "src" / "camlens").as_posix() for p in gallery.sample_paths()]
    assert record["samples"] == samples
    assert list(record["methods"]) == camlens.methods(DEMO), STALE
    _, explained = gallery.explain_samples(camlens.methods(DEMO))
    for method, exp in explained.items():
        stored = record["methods"][method]
        fresh = gallery.summary(exp.maps)
        for old, new in zip(stored, fresh):
            assert abs(old["mean"] - new["mean"]) <= 2e-3, (method, STALE)
            # the peak may move to a tied neighbour; it stays within two pixels
            assert max(abs(a - b) for a, b in zip(old["peak"], new["peak"])) <= 2, (method, STALE)
