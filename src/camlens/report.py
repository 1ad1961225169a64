"""``report.html``: a self-contained gallery of a run (no network, images linked relatively).

Per image: the original, each method's overlay and the prediction; sortable by confidence or
name, filtered by predicted class; the inputs that failed are listed with their reasons.
Everything written into the page is escaped (``html.escape``; links are percent-encoded first).
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f4;color:#222}
header{background:#222;color:#fff;padding:12px 20px}
header h1{margin:0;font-size:20px}
.controls{padding:10px 20px;display:flex;gap:20px;align-items:center;flex-wrap:wrap}
.gallery{display:flex;flex-direction:column;gap:14px;padding:0 20px 20px}
.card{background:#fff;border-radius:6px;padding:10px;box-shadow:0 1px 3px #0002}
.card h2{font-size:15px;margin:0 0 4px;word-break:break-all}
.pred{font-size:14px;margin:0 0 8px}
.row{display:flex;gap:10px;flex-wrap:wrap}
figure{margin:0;text-align:center}
figure img{height:220px;max-width:100%;object-fit:contain;display:block;background:#ddd}
figcaption{font-size:12px;color:#444;margin-top:3px}
.failures{margin:0 20px 20px;background:#fff3f3;border-radius:6px;padding:10px}
.failures li{word-break:break-all}
"""

_SCRIPT = """
(function(){
  var gallery=document.getElementById('gallery');
  var cards=Array.prototype.slice.call(gallery.children);
  var sorter=document.getElementById('sort'), filter=document.getElementById('filter');
  function apply(){
    var how=sorter.value, cls=filter.value;
    cards.sort(function(a,b){
      if(how==='name'){return a.dataset.name.localeCompare(b.dataset.name);}
      var d=parseFloat(a.dataset.prob)-parseFloat(b.dataset.prob);
      return how==='asc'?d:-d;
    });
    var shown=0;
    cards.forEach(function(c){
      var show=(cls==='' || c.dataset.cls===cls);
      c.style.display=show?'':'none'; if(show){shown++;}
      gallery.appendChild(c);
    });
    document.getElementById('count').textContent=shown+' of '+cards.length+' images';
  }
  sorter.addEventListener('change',apply); filter.addEventListener('change',apply); apply();
})();
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _src(path: str) -> str:
    return _e(quote(path.replace(os.sep, "/"), safe="/"))


def _percent(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if number != number else f"{number * 100:.1f}%"


def render_html(
    records: Sequence[dict[str, Any]], failures: Sequence[Any] = (), title: str = "camlens report"
) -> str:
    """The report page for ``results.jsonl`` records and the failures of the run."""
    images: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        images.setdefault(str(record.get("path", "")), []).append(record)
    classes: dict[str, int] = {}
    cards = []
    for path, rows in images.items():
        first = rows[0]
        predicted = str(first.get("predicted_name", first.get("predicted", "")))
        classes[predicted] = classes.get(predicted, 0) + 1
        figures = [
            f'<figure><img src="{_src(str(first.get("image", "")))}" alt="original"'
            f"><figcaption>original ({_e(first.get('width'))}&times;"
            f"{_e(first.get('height'))})</figcaption></figure>"
        ]
        for row in rows:
            explained = f"{row.get('target_name', '')} {_percent(row.get('target_probability'))}"
            where = f" at {_e(row.get('layer'))}" if row.get("layer") else " (input pixels)"
            figures.append(
                f'<figure><img src="{_src(str(row.get("overlay", "")))}" '
                f'alt="{_e(row.get("method"))} overlay"><figcaption>'
                f"<b>{_e(row.get('method'))}</b>{where}<br>"
                f"explains {_e(explained.strip())}</figcaption></figure>"
            )
        panel = first.get("panel")
        link = f' &middot; <a href="{_src(str(panel))}">panel</a>' if panel else ""
        cards.append(
            f'<section class="card" data-prob="{_e(first.get("probability", 0))}" '
            f'data-cls="{_e(predicted)}" data-name="{_e(Path(path).name)}">'
            f'<h2 title="{_e(path)}">{_e(Path(path).name)}</h2>'
            f'<p class="pred">predicted <b>{_e(predicted)}</b> '
            f"{_e(_percent(first.get('probability')))}{link}</p>"
            f'<div class="row">{"".join(figures)}</div></section>'
        )
    options = "".join(
        f'<option value="{_e(name)}">{_e(name)} ({count})</option>'
        for name, count in sorted(classes.items(), key=lambda item: item[0].lower())
    )
    failed = ""
    if failures:
        items = "".join(
            f"<li><code>{_e(getattr(f, 'path', ''))}</code>: {_e(getattr(f, 'reason', ''))}</li>"
            for f in failures
        )
        failed = (
            f'<section class="failures"><h2>{len(failures)} input(s) skipped</h2>'
            f"<ul>{items}</ul></section>"
        )
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_STYLE}</style></head><body>"
        f"<header><h1>{_e(title)}</h1></header>"
        '<div class="controls"><label>Sort <select id="sort">'
        '<option value="desc">confidence, high to low</option>'
        '<option value="asc">confidence, low to high</option>'
        '<option value="name">file name</option></select></label>'
        '<label>Predicted class <select id="filter"><option value="">all</option>'
        f'{options}</select></label><span id="count"></span></div>'
        f'{failed}<main class="gallery" id="gallery">{"".join(cards)}</main>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


def write_report(
    out: Path,
    records: Sequence[dict[str, Any]],
    failures: Sequence[Any] = (),
    title: str = "camlens report",
) -> Path:
    """Write ``out/report.html``; returns its path."""
    file = Path(out) / "report.html"
    file.write_text(render_html(records, failures, title), encoding="utf-8")
    return file


_VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "wbr",
}


def html_problems(text: str) -> list[str]:
    """Structural problems of an HTML page: a missing doctype, unclosed or stray tags.

    A strict check of what :func:`render_html` writes (every non-void element closed, in order).
    """
    from html.parser import HTMLParser

    problems: list[str] = []
    stack: list[str] = []

    class Checker(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list) -> None:
            if tag not in _VOID:
                stack.append(tag)

        def handle_endtag(self, tag: str) -> None:
            if not stack or stack[-1] != tag:
                problems.append(f"</{tag}> closes {stack[-1] if stack else 'nothing'}")
            else:
                stack.pop()

    if not text.lstrip().lower().startswith("<!doctype html>"):
        problems.append("no <!DOCTYPE html>")
    checker = Checker(convert_charrefs=True)
    checker.feed(text)
    checker.close()
    problems.extend(f"<{tag}> never closed" for tag in stack)
    return problems
