"""The documentation site builds with ``mkdocs build --strict`` (a broken link or a missing
reference fails), offline, its generated pages match the code, and it works opened from disk
(``file://``: every link names a file, search starts) as well as served."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
from browsers import launched
from typer.testing import CliRunner

import camlens
from camlens.cli import app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    assert "WARNING" not in log, log[-6000:]
    return out


def page(site: Path, name: str) -> str:
    """The built page of ``docs/NAME.md`` (``use_directory_urls: false``: ``NAME.html``)."""
    return (site / f"{name}.html").read_text(encoding="utf-8")


def test_every_command_and_option_is_on_the_command_line_page(site):
    html = page(site, "cli")
    listing = CliRunner().invoke(app, ["--help"]).output
    commands = [c for c in re.findall(r"│ (\w[\w-]*) ", listing) if c != "camlens"]
    assert set(commands) >= {"explain", "evaluate", "train", "layers", "methods", "demo"}
    for command in commands:
        assert f'id="camlens-{command}"' in html, command
        text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        for option in set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text)) - {"--help"}:
            assert f"<code>{option}" in html or f" {option}" in html, (command, option)


def test_api_reference_has_every_method_class_and_the_api(site):
    methods = page(site, "api/methods")
    for name in camlens.methods():
        cls = camlens.methods._registry.get(name)
        assert f'id="camlens.{cls.__name__}"' in methods, name
    explain = page(site, "api/explain")
    assert 'id="camlens.explain"' in explain and "the predicted class" in explain
    assert 'id="camlens.Explanation"' in page(site, "api/explanation")
    assert 'id="camlens.plot"' in page(site, "api/render")


def test_gallery_and_tutorials_are_pages(site):
    gallery = page(site, "gallery")
    for name in camlens.methods():  # on the demo CNN, or (the attention methods) the demo ViT
        folders = ("", "demo-vit/")
        assert any(f'src="images/gallery/{f}{quote(name)}.png"' in gallery for f in folders), name
        assert any((site / "images" / "gallery" / f"{f}{name}.png").is_file() for f in folders)
    for notebook in sorted((ROOT / "docs" / "examples").glob("*.ipynb")):
        html = page(site, f"examples/{notebook.stem}")
        assert "data:image/png;base64," in html, notebook.name  # its figures were rendered


def test_no_network_needed_to_read_it(site):
    """No web fonts, scripts or stylesheets from elsewhere; MathJax is in the site."""
    remote = re.compile(r'<(?:script|link|img)[^>]+(?:src|href)="(?:https?:)?//')
    for html in site.rglob("*.html"):
        text = html.read_text(encoding="utf-8")
        assert not remote.search(text), (html, remote.search(text))
        assert "fonts.googleapis.com" not in text, html
    mathjax = site / "assets" / "mathjax"
    assert (mathjax / "tex-chtml.js").stat().st_size > 500_000
    assert list((mathjax / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert 'class="arithmatex"' in page(site, "methods")  # formulas are marked for MathJax


#: Links and sources in a page that stay inside the site (no scheme, not only a fragment).
LOCAL = re.compile(r'(?:href|src)="(?![a-z][a-z0-9+.-]*:|#|//)([^"]+)"')


def test_every_link_in_the_site_names_a_file(site):
    """Opened from disk a link to a folder shows a listing: every local link names a file
    (``404.html`` excepted: a server's error page, its links absolute)."""
    broken = [
        (str(html.relative_to(site)), link)
        for html in site.rglob("*.html")
        if html.name != "404.html"
        for link in LOCAL.findall(html.read_text(encoding="utf-8"))
        if not (html.parent / unquote(urlsplit(link).path)).is_file()
    ]
    assert broken == []


@pytest.fixture(scope="module")
def browser():
    with launched() as chromium:
        yield chromium


def test_opened_from_disk_a_menu_link_opens_its_page_and_search_finds(site, browser, tmp_path):
    """``site/index.html`` opened as a file: the menu's Architecture link shows that page (not a
    folder listing) and a search for a word on it lists it; no script error on the way."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto((site / "index.html").as_uri())
    page.click("nav.md-nav--primary a.md-nav__link[href='architecture.html']")
    page.wait_for_load_state("load")
    assert page.url == (site / "architecture.html").as_uri()
    assert page.locator("article h1").inner_text().startswith("Architecture")
    page.locator("input.md-search__input").click()
    page.locator("input.md-search__input").press_sequentially("adapter_for", delay=20)
    results = page.locator(".md-search-result__item a[href]")
    results.first.wait_for(timeout=20_000)
    hrefs = results.evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert any(h.startswith((site / "architecture.html").as_uri()) for h in hrefs), hrefs
    page.screenshot(path=str(tmp_path / "search-from-disk.png"))
    assert errors == []
