"""Shared test settings: where the book is, and where the data mirror is."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


def ci_requires(what: str) -> bool:
    """In CI (METABOOK_CI=1) a missing prerequisite is a failure, not a skip."""
    return os.environ.get("METABOOK_CI") == "1"


def skip_or_fail(reason: str) -> None:
    if ci_requires(reason):
        pytest.fail(f"{reason} (CI requires it: METABOOK_CI=1)")
    pytest.skip(reason)
