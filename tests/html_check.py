"""``html_problems``: the strict structure check the report tests apply to ``report.html``."""

from __future__ import annotations

from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def html_problems(text: str) -> list[str]:
    """Structural problems of an HTML page: a missing doctype, unclosed or stray tags (every
    non-void element closed, in order: what camlens.runs.report.render_html writes)."""
    problems = [] if text.lstrip().lower().startswith("<!doctype html>") else ["no <!DOCTYPE html>"]
    checker = _Checker()
    checker.feed(text)
    checker.close()
    return problems + checker.problems + [f"<{tag}> never closed" for tag in checker.stack]
