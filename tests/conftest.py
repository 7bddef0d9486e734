"""Shared test settings: where the book is, and where the data mirror is."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The data fixtures (real_mirror, real_cache, no_data_environment) for every test module;
# none of them is autouse, so the notebooks' nbval tests do not see them.
pytest_plugins = ["fixtures_data"]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


def _script_loader(patch: pytest.MonkeyPatch):
    def load(name: str):
        patch.syspath_prepend(str(ROOT / "scripts"))
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        patch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def load_script(monkeypatch):
    """``load_script("full_scale_x")``: import ``scripts/full_scale_x.py`` as a module, as running it would.

    Registered in ``sys.modules`` (dataclasses look their module up there) and
    with ``scripts/`` on the path (the scripts import ``full_scale_common``),
    both undone after the test.
    """
    return _script_loader(monkeypatch)


@pytest.fixture(scope="module")
def load_script_for_module():
    """:func:`load_script` for a module-scoped fixture: undone after the module's last test."""
    with pytest.MonkeyPatch.context() as patch:
        yield _script_loader(patch)


def ci_requires(what: str) -> bool:
    """In CI (METABOOK_CI=1) a missing prerequisite is a failure, not a skip."""
    return os.environ.get("METABOOK_CI") == "1"


def skip_or_fail(reason: str) -> None:
    if ci_requires(reason):
        pytest.fail(f"{reason} (CI requires it: METABOOK_CI=1)")
    pytest.skip(reason)
