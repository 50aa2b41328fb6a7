"""The installed version of comatch, from the package metadata."""

from __future__ import annotations


def package_version() -> str:
    """The installed comatch version, or "unknown" when the package is not installed (a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("comatch")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"
