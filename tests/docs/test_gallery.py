"""The documentation's gallery is current: one picture per registered method, and the maps it
shows are the ones camlens computes today (checked from gallery.json, without re-rendering), for
the demo CNN and the demo vision transformer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from repo_scripts import load_script

import camlens

ROOT = Path(__file__).resolve().parents[2]


gallery = load_script("gallery")
STALE = "the gallery is stale: run python scripts/gallery.py"
#: per bundled model, the methods that apply to it (the attention methods only to the ViT)
SHOWN = {name: camlens.methods(camlens.load_model(name)) for name in gallery.MODELS}


def test_one_picture_per_method_and_the_page_lists_them():
    assert set(camlens.methods()) == {m for methods in SHOWN.values() for m in methods}
    for name, methods in SHOWN.items():
        folder = gallery.MODELS[name]
        assert sorted(p.stem for p in folder.glob("*.png")) == sorted(methods), STALE
        for method in methods:
            with Image.open(folder / f"{method}.png") as picture:
                assert picture.format == "PNG" and picture.size[0] == 800  # four 2-inch cells
    assert gallery.PAGE.read_text() == gallery.page(SHOWN["demo"], SHOWN["demo-vit"]), STALE


@pytest.mark.parametrize("name", list(gallery.MODELS))
def test_the_pictures_show_todays_maps(name):
    record = json.loads((gallery.MODELS[name] / "gallery.json").read_text())
    samples = [p.relative_to(ROOT / "src" / "camlens").as_posix() for p in gallery.sample_paths()]
    assert record["samples"] == samples
    assert list(record["methods"]) == SHOWN[name], STALE
    _, explained = gallery.explain_samples(SHOWN[name], name)
    for method, exp in explained.items():
        stored = record["methods"][method]
        fresh = gallery.summary(exp.maps)
        for old, new in zip(stored, fresh):
            assert abs(old["mean"] - new["mean"]) <= 2e-3, (method, STALE)
            # the peak may move to a tied neighbour; it stays within two pixels
            assert max(abs(a - b) for a, b in zip(old["peak"], new["peak"])) <= 2, (method, STALE)
