"""The receiver's version, in one place: the installed package's metadata (``pyproject.toml``)."""

from __future__ import annotations

import importlib.metadata


def package_version() -> str:
    """The installed package's version (what `pip show kallglot-receiver` says)."""
    try:
        return importlib.metadata.version("kallglot-receiver")
    except importlib.metadata.PackageNotFoundError:  # running from a plain source tree
        return "0+unknown"


VERSION = package_version()
