"""report.html: structure, escaping, sorting and filtering controls, failures."""

from __future__ import annotations

from html.parser import HTMLParser
from types import SimpleNamespace

from camlens.report import html_problems, render_html, write_report

EVIL = '"><img src=x onerror=alert(1)><script>alert(2)</script>'


def record(path, method, name, prob, **extra):
    return {
        "path": path,
        "image": f"images/{path.rsplit('/', 1)[-1]}.jpg",
        "width": 60,
        "height": 40,
        "method": method,
        "layer": "layer4",
        "predicted_name": name,
        "probability": prob,
        "target_name": name,
        "target_probability": prob,
        "overlay": f"overlays/{method}.png",
        "panel": None,
        **extra,
    }


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data):
        self.text.append(data)


def test_structure_and_escaping():
    records = [
        record("/d/a.jpg", "gradcam", "cat", 0.9),
        record("/d/a.jpg", "cam", "cat", 0.9),
        record(f"/d/{EVIL}.jpg", "gradcam", EVIL, 0.4),
    ]
    failures = [SimpleNamespace(path=f"/d/{EVIL}", reason=EVIL)]
    page = render_html(records, failures, title=EVIL)
    assert html_problems(page) == []
    parsed = Collect()
    parsed.feed(page)
    # only the tags the page itself writes: the evil strings stayed text
    assert parsed.tags.count("script") == 1
    assert parsed.tags.count("img") == 2 + 1 + 2  # per image: original + one per method
    assert all(value != "x" for name, value in parsed.attrs if name == "src")
    assert EVIL in "".join(parsed.text)
    # the class filter lists each predicted class with its count; the sorter three orders
    assert '<option value="cat">cat (1)</option>' in page
    for value in ("desc", "asc", "name"):
        assert f'<option value="{value}">' in page
    assert 'data-prob="0.9"' in page and 'data-cls="cat"' in page
    assert "1 input(s) skipped" in page


def test_links_are_relative_and_encoded(tmp_path):
    records = [
        record("/d/a b#1.jpg", "gradcam++", "cat", 0.5, overlay="overlays/a b#1_gradcam++.png")
    ]
    file = write_report(tmp_path, records)
    page = file.read_text()
    assert 'src="overlays/a%20b%231_gradcam%2B%2B.png"' in page
    assert "file://" not in page and 'src="/' not in page


def test_html_problems_finds_unclosed_tags():
    assert html_problems("<!DOCTYPE html><html><body><div></body></html>") == [
        "</body> closes div",
        "</html> closes div",
        "<html> never closed",
        "<body> never closed",
        "<div> never closed",
    ]
    assert html_problems("<html></html>") == ["no <!DOCTYPE html>"]
