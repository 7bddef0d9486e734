"""Installing metabook keeps the torch that is already there (Colab's, for example).

A fresh virtual environment gets a stand-in torch 2.4.1+cu121 (a wheel made
here that carries only the distribution metadata), then pip resolves
`pip install .` against it. The project asks for `torch>=2.3`, so pip must
plan to install everything else and leave torch alone.
"""
from __future__ import annotations

import json
import subprocess
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.network


def make_stand_in_torch(folder: Path, version: str) -> Path:
    """A wheel named torch at ``version`` whose package is an empty module."""
    name = f"torch-{version}.dist-info"
    wheel = folder / f"torch-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("torch/__init__.py", f"__version__ = {version!r}\n")
        archive.writestr(f"{name}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        archive.writestr(f"{name}/WHEEL", "Wheel-Version: 1.0\nGenerator: metabook-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{name}/RECORD", "")
    return wheel


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
    assert "metabook" in planned, planned
    assert "torch" not in planned, f"pip would replace torch {colab_torch} with {planned.get('torch')}"
    kept = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    assert kept.stdout.strip() == colab_torch
