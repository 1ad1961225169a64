"""A griffe extension for the API reference (mkdocstrings), read by ``mkdocs.yml``.

- A method class whose docstring is its function's (``__doc__ = gradcam.__doc__``, so the formula
  is written once) gets that docstring on the site too.
- reStructuredText math in docstrings (``.. math::`` blocks, ``:math:`x``` roles) becomes
  ``$$ ... $$`` / ``$ ... $``, which pymdownx.arithmatex keeps out of Markdown's way; reST
  cross-references (``:class:`Run```, ``:func:``...) become code.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":math:`([^`]+)`")
_REFERENCE = re.compile(r":(?:class|func|meth|mod|data|attr|exc):`~?([^`]+)`")


def rst_math(text: str) -> str:
    """``.. math::`` blocks (with their indented continuation) and ``:math:`` roles as $-math,
    other roles as code."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(".. math::"):
            indent = line[: len(line) - len(stripped)]
            body = [stripped[len(".. math::") :].strip()]
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(indent + " ")):
                body.append(lines[i])
                i += 1
            formula = textwrap.dedent("\n".join(body[1:])).strip()
            formula = " ".join(part for part in (body[0], formula) if part)
            out += [f"{indent}$$", f"{indent}{formula}", f"{indent}$$", ""]
            continue
        out.append(_REFERENCE.sub(r"`\1`", _ROLE.sub(r"$\1$", line)))
        i += 1
    return "\n".join(out)


class CamlensDocs(griffe.Extension):
    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        source = cls.members.get("__doc__")
        value = str(getattr(source, "value", "") or "")
        if value.endswith(".__doc__") and cls.parent is not None:
            function = cls.parent.members.get(value[: -len(".__doc__")])
            if function is not None and function.docstring is not None:
                cls.docstring = griffe.Docstring(function.docstring.value, parent=cls)
        if cls.docstring is not None:
            cls.docstring.value = rst_math(cls.docstring.value)

    def on_function_instance(self, *, func: griffe.Function, **kwargs: Any) -> None:
        if func.docstring is not None:
            func.docstring.value = rst_math(func.docstring.value)

    def on_module_instance(self, *, mod: griffe.Module, **kwargs: Any) -> None:
        if mod.docstring is not None:
            mod.docstring.value = rst_math(mod.docstring.value)
