"""The project's version: pyproject.toml's, as the installed distribution records it."""

from __future__ import annotations

from importlib import metadata


def version() -> str:
    try:
        return metadata.version("qianshao")
    except metadata.PackageNotFoundError:  # a checkout run without installing it
        return "0+unknown"
