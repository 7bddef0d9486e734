"""The name this package is installed under, and a warning when another ``metabook`` shares its folder.

The package is imported as ``metabook`` but distributed as ``metabook-learn``
(``pip install "metabook-learn @ git+<repository>"``): the name ``metabook``
on PyPI belongs to an unrelated project, a PDF-collection renamer, which
installs its own ``metabook`` package (``metabook/__init__.py``,
``__main__.py``, ``cli.py``, ...). Two distributions that write into the same
folder cannot both work: whichever was installed last has overwritten the
other's files, and uninstalling either deletes files of the other. pip does
not notice, so :func:`warn_if_another_metabook_is_installed` does, when
:mod:`metabook.runtime` is imported (by ``import metabook`` and by every
command).
"""
from __future__ import annotations

import importlib.metadata
import warnings

DISTRIBUTION = "metabook-learn"
# The start of pyproject.toml's description; this project was distributed as "metabook" until
# 0.1.0, and a checkout installed then is this package, not the other one.
OUR_SUMMARY = "Meta-learning, learned by building it"


def install_command() -> str:
    """``pip install "metabook-learn @ git+URL"`` with the Source URL of the installed metadata."""
    try:
        urls = importlib.metadata.metadata(DISTRIBUTION).get_all("Project-URL") or []
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        urls = []
    source = [url.split(",", 1)[1].strip() for url in urls if url.split(",", 1)[0].strip() == "Source"]
    if not source:
        return f'pip install "{DISTRIBUTION} @ git+<the repository URL in README.md>"'
    return f'pip install "{DISTRIBUTION} @ git+{source[0]}"'


def other_metabook() -> importlib.metadata.Distribution | None:
    """The installed distribution named ``metabook`` when it is not this project, else None."""
    try:
        found = importlib.metadata.distribution("metabook")
    except importlib.metadata.PackageNotFoundError:
        return None
    if (found.metadata["Summary"] or "").startswith(OUR_SUMMARY):
        return None
    return found


def warn_if_another_metabook_is_installed() -> None:
    """Warn, with the fix, when the unrelated PyPI ``metabook`` is installed beside this package."""
    other = other_metabook()
    if other is None:
        return
    warnings.warn(
        f"the unrelated PyPI project 'metabook' {other.version} ({other.metadata['Summary']!r}) is installed "
        f"in this Python environment. It writes its own files into the same folder, metabook/, as this "
        f"package ({DISTRIBUTION}), so one of the two is broken. Keep them in separate virtual environments: "
        f"here, run `pip uninstall -y metabook {DISTRIBUTION}`, then `{install_command()}`.",
        UserWarning, stacklevel=3)
