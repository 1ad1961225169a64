"""camlens.__version__ is the installed distribution's version (pyproject.toml holds it once)."""

from __future__ import annotations

import importlib.metadata

import camlens


def test_version_is_the_installed_distributions():
    assert camlens.__version__ == importlib.metadata.version("camlens")


def test_a_source_tree_without_metadata_says_unknown(monkeypatch):
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert camlens._installed_version() == "0+unknown"
