"""Installing the package: its name, what the wheel holds, and the torch it leaves alone.

The distribution is `metabook-learn` and the import `metabook_learn`: the name
`metabook` on PyPI belongs to an unrelated project (a PDF-collection renamer)
that installs its own `metabook` package and command, so neither name of this
project can be taken for it, and both can live in one environment. A wheel built
from the repository must install under that name in a fresh virtual
environment, ship `py.typed`, carry the repository URL of `_config.yml`, and
keep working when the other PyPI `metabook` is installed beside it.

Installing keeps the torch that is already there (Colab's, for example): a
fresh virtual environment gets a stand-in torch 2.4.1+cu121 (a wheel made
here that carries only the distribution metadata), then pip resolves
`pip install .` against it. The project asks for `torch>=2.3`, so pip must
plan to install everything else and leave torch alone. Only that test needs
the package registry.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import yaml

from conftest import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "metabook-learn"


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def make_stand_in_wheel(folder: Path, name: str, version: str, files: dict[str, str], summary: str = "") -> Path:
    """A wheel of distribution ``name`` at ``version`` holding ``files`` (path: text) and metadata only."""
    info = f"{name}-{version}.dist-info"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {summary}\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: metabook-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def make_stand_in_torch(folder: Path, version: str) -> Path:
    """A wheel named torch at ``version`` whose package is an empty module."""
    return make_stand_in_wheel(folder, "torch", version, {"torch/__init__.py": f"__version__ = {version!r}\n"})


def build_wheel(folder: Path) -> Path:
    """The wheel of the repository's package, built offline from a copy (the build writes build/ and egg-info)."""
    source = folder / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "metabook_learn", source / "metabook_learn", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-w", str(folder / "wheels"), str(source)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    wheels = list((folder / "wheels").glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def wheel_metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        [path] = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(path).decode())


def test_the_wheel_is_named_metabook_learn_and_ships_py_typed(wheel):
    assert wheel.name.startswith("metabook_learn-"), wheel.name
    metadata = wheel_metadata(wheel)
    assert metadata["Name"] == DISTRIBUTION
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "metabook_learn/py.typed" in names, "py.typed is missing: type checkers would skip the package (PEP 561)"
    assert {"metabook_learn/__init__.py", "metabook_learn/__main__.py", "metabook_learn/data/__init__.py"} <= names


def test_one_repository_url_everywhere(wheel):
    """_config.yml's repository.url is the address of pyproject's project URLs, the README and CONTRIBUTING."""
    url = repository_url()
    urls = dict(entry.split(", ", 1) for entry in wheel_metadata(wheel).get_all("Project-URL"))
    assert urls == {"Homepage": url, "Source": url}, f"pyproject.toml [project.urls] must be _config.yml's {url}"
    install = f'"{DISTRIBUTION} @ git+{url}"'
    for document in ("README.md", "CONTRIBUTING.md"):
        text = (ROOT / document).read_text()
        assert install in text, f"{document} must install with {install}"
        others = {word for word in text.split() if "github.com/" in word and "/metabook" in word and url not in word}
        assert not others, f"{document} names another repository address: {others}"


def test_the_wheel_installs_in_a_fresh_venv_and_runs(tmp_path, wheel):
    """Offline: the venv sees this interpreter's packages (torch) through a .pth file, but not its metabook."""
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=False)  # this interpreter's pip installs into it (--python): quicker
    python = environment / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check", "install",
           "--quiet", "--no-deps", "--no-index"]
    # No PYTHONPATH (the tests' own may hold a checkout with metadata that pip would take for an installed
    # metabook-learn), and not from the repository's folder.
    clean = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run([*pip, str(wheel)], check=True, timeout=300, cwd=tmp_path, env=clean)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, env=clean).stdout.strip()
    # Lines of a .pth file only extend sys.path, after the venv's own site-packages; the .pth files of that
    # folder (such as an editable metabook of the test environment) are not read.
    Path(site, "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), *command], capture_output=True, text=True, cwd=tmp_path, env=clean,
                              timeout=300)

    found = run("-c", "import importlib.metadata, metabook_learn; "
                      f"print(metabook_learn.__file__); print(importlib.metadata.version({DISTRIBUTION!r}))")
    assert found.returncode == 0, found.stderr[-3000:]
    where, version = found.stdout.split()
    assert Path(where).is_relative_to(environment), f"imported {where}, not the installed package"
    assert version == wheel.name.split("-")[1]
    helped = run("-m", "metabook_learn", "--help")
    assert helped.returncode == 0 and "train" in helped.stdout, helped.stderr[-3000:]
    assert (environment / "bin" / "metabook-learn").exists(), "the metabook-learn command was not installed"

    # The unrelated PyPI "metabook" has its own folder and command: both projects work side by side.
    other = make_stand_in_wheel(tmp_path, "metabook", "1.0.0", {"metabook/__init__.py": "WHO = 'pdf renamer'\n"},
                                summary="rename and organize your pdf book collection")
    subprocess.run([*pip, str(other)], check=True, timeout=300, cwd=tmp_path, env=clean)
    both = run("-c", "import metabook, metabook_learn; print(metabook.WHO); print(metabook_learn.__name__)")
    assert both.returncode == 0, both.stderr[-3000:]
    assert both.stdout.splitlines() == ["pdf renamer", "metabook_learn"], both.stdout
    assert run("-m", "metabook_learn", "--help").returncode == 0


@pytest.mark.network
def test_pip_install_keeps_an_existing_torch(tmp_path):
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    colab_torch = "2.4.1+cu121"
    subprocess.run([*pip, "install", "--quiet", "--no-deps", "--no-index",
                    str(make_stand_in_torch(tmp_path, colab_torch))], check=True)
    report = tmp_path / "report.json"
    result = subprocess.run(
        [*pip, "install", "--dry-run", "--quiet", "--report", str(report), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0 and ("Could not find a version" in result.stderr or "NewConnectionError" in result.stderr):
        skip_or_fail(f"the package registry is out of reach: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-3000:]
    planned = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    assert DISTRIBUTION in planned, planned
    assert "torch" not in planned, f"pip would replace torch {colab_torch} with {planned.get('torch')}"
    kept = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    assert kept.stdout.strip() == colab_torch
