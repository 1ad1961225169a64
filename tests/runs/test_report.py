"""report.html and report-data.js: summary, escaping, encoded links, columnar data."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pandas as pd
import tomllib
from html_check import html_problems

from camlens.runs.report import render_html, run_data, write_report

EVIL = '"><img src=x onerror=alert(1)><script>alert(2)</script>'


def row(path, method, name, prob, truth=None, **extra):
    return {
        "path": path,
        "method": method,
        "layer": "layer4",
        "predicted_name": name,
        "probability": prob,
        "target_name": name,
        "true_name": truth,
        "correct": None if truth is None else truth == name,
        "overlay": f"overlays/{method}.jpg",
        "image": None,
        "error": None,
        **extra,
    }


def frame(rows):
    return pd.DataFrame(rows)


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data):
        self.text.append(data)


def test_summary_structure_and_escaping():
    rows = frame(
        [
            row("/d/a.jpg", "gradcam", "cat", 0.95, "cat"),
            row("/d/a.jpg", "cam", "cat", 0.95, "cat"),
            row(f"/d/{EVIL}.jpg", "gradcam", EVIL, 0.42, "dog"),
            {"path": f"/d/{EVIL}", "method": None, "error": EVIL},
        ]
    )
    page = render_html(rows, {"methods": ["gradcam", EVIL]}, title=EVIL)
    assert html_problems(page) == []
    parsed = Collect()
    parsed.feed(page)
    # only the tags the page itself writes: the evil strings stayed text
    assert parsed.tags.count("script") == 2 and parsed.tags.count("img") == 0
    assert all(value != "x" for name, value in parsed.attrs if name == "src")
    text = "".join(parsed.text)
    assert EVIL in text and "1 input(s) skipped" in text
    # 2 images, 1 of 2 right; the confidence histogram has one image in 90-100% and 40-50%
    assert "images2" in text.replace(" ", "") and "50.0% of 2" in text
    assert 'title="90-100%: 1"' in page and 'title="40-50%: 1"' in page
    assert 'title="0-10%: 0"' in page
    for control in ("method", "predicted", "truth", "wrong", "lo", "hi", "sort", "prev", "next"):
        assert f'id="{control}"' in page


def test_data_columns_strings_once_and_links_encoded(tmp_path):
    (tmp_path / "out").mkdir()
    rows = frame(
        [
            row(
                str(tmp_path / "in" / "a b#1.jpg"),
                "gradcam++",
                "cat",
                0.5,
                "cat",
                overlay="overlays/a b#1_gradcam++.jpg",
            ),  # fmt: skip
            row(
                str(tmp_path / "in" / "c.jpg"), "gradcam++", "cat", 0.25, None, image="images/c.jpg"
            ),
            {"path": "/x.jpg", "method": None, "error": "empty file (0 bytes)"},
        ]
    )
    data = run_data(tmp_path / "out", rows)
    strings = data["strings"]
    assert len(strings) == len(set(strings))
    assert [strings[i] for i in data["image"]] == ["../in/a%20b%231.jpg", "images/c.jpg"]
    assert strings[data["overlay"][0]] == "overlays/a%20b%231_gradcam%2B%2B.jpg"
    assert data["correct"] == [1, -1] and data["probability"] == [0.5, 0.25]
    assert data["true_name"][1] == -1 and strings[data["method"][1]] == "gradcam++"
    file = write_report(tmp_path / "out", rows, {"methods": ["gradcam++"]})
    script = (tmp_path / "out" / "report-data.js").read_text()
    assert script.startswith("window.CAMLENS_RUN=") and "</" not in script
    assert json.loads(script[len("window.CAMLENS_RUN=") : -2]) == data
    assert "file://" not in file.read_text()


def test_a_report_links_uri_inputs_as_they_are_and_local_ones_absolutely_from_a_store(tmp_path):
    """A relative link from a run folder in an object store (or to an s3:// input) leads nowhere:
    an input URI is linked as it is, a local input by its absolute file:// URI there."""
    local = tmp_path / "in" / "a b.jpg"
    rows = frame(
        [row(str(local), "cam", "cat", 0.5, None), row("s3://b/x y.jpg", "cam", "cat", 0.5, None)]
    )

    def links(absolute):
        data = run_data(tmp_path / "out", rows, absolute)
        return [data["strings"][i] for i in data["image"]]

    assert links(False) == ["../in/a%20b.jpg", "s3://b/x%20y.jpg"]
    assert links(True) == [local.as_uri(), "s3://b/x%20y.jpg"]


def test_html_problems_finds_unclosed_tags():
    assert html_problems("<!DOCTYPE html><html><body><div></body></html>") == [
        "</body> closes div",
        "</html> closes div",
        "<html> never closed",
        "<body> never closed",
        "<div> never closed",
    ]
    assert html_problems("<html></html>") == ["no <!DOCTYPE html>"]


def test_page_inlines_its_static_files_and_they_ship(tmp_path):
    """report_static/'s CSS and script are inlined (the page opens from disk, one file beside the
    data) and are package data, so a non-editable install has them."""
    static = resources.files("camlens.runs") / "report_static"
    css, js = ((static / name).read_text() for name in ("report.css", "report.js"))
    assert "</" not in css and "</" not in js  # neither can end its inline tag
    page = write_report(tmp_path, frame([row("/d/a.jpg", "cam", "cat", 0.9)]), {}).read_text()
    assert f"<style>{css}</style>" in page and f"<script>{js}</script>" in page
    assert page.count("<script src=") == 1 and "<link" not in page  # report-data.js only
    globs = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["tool"][
        "setuptools"
    ]
    assert "runs/report_static/*" in globs["package-data"]["camlens"]
