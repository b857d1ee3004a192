"""Which build serves: the package version, the image's build id and the database schema revision.

``UPCOACH_BUILD`` is set by the image build (deploy/Dockerfile's ``BUILD`` argument, e.g. a git commit); a checkout
run without it reports ``dev``.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("upcoach")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def build_id() -> str:
    return os.environ.get("UPCOACH_BUILD") or "dev"


def build_labels(schema_revision: str | None) -> dict[str, str]:
    return {"version": package_version(), "build": build_id(), "schema_revision": schema_revision or "none"}
