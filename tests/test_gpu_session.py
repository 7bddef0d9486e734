"""scripts/gpu_session.sh (one lent GPU session) and the provenance it relies on where there is no .git.

``prepare`` reads real data and ``run`` trains for minutes, so ``run`` is
tested in its dry mode (``GPU_SESSION_DRY=1``), which prints every command
with its ``timeout`` instead of running it; each planned command's options
are then parsed by the script's own parser.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys

import pytest

from metabook_learn import checkpoint

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "gpu_session.sh"
# What the plan runs, in this order (CONTRIBUTING.md, "On a lent GPU").
ORDER = ["nvidia-smi", "benchmarks/meta_step.py", "scripts/full_scale_gradient.py", "scripts/full_scale_gradient.py",
         "scripts/full_scale_mldg.py", "scripts/full_scale_protonets.py", "scripts/full_scale_closed_form.py"]


def gpu_session(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def planned(budget: int, out) -> list[list[str]]:
    """The commands of a dry run, without ``timeout`` and its options (the torch one-liner left out)."""
    done = gpu_session("run", str(budget), GPU_SESSION_DRY="1", OUT=str(out))
    assert done.returncode == 0, done.stderr
    commands = []
    for line in done.stdout.splitlines():
        if line.startswith("+ "):
            words = line[2:].split(" ")
            assert words[:5] == ["timeout", "-s", "INT", "-k", "10"], line
            assert 0 < int(words[5]) <= budget, line
            if " -c " not in line:
                commands.append(shlex.split(" ".join(words[6:])))
    return commands


def test_provenance_names_the_commit_from_the_environment_outside_a_checkout(monkeypatch):
    monkeypatch.setattr(checkpoint, "_git", lambda *args: None)  # not a git checkout
    monkeypatch.delenv("METABOOK_COMMIT", raising=False)
    where = checkpoint.provenance("cpu")
    assert where["git_commit"] is None and where["git_dirty"] is None
    for state, dirty in (("clean", False), ("dirty", True)):
        monkeypatch.setenv("METABOOK_COMMIT", f"0123abc {state}\n")
        where = checkpoint.provenance("cpu")
        assert where["git_commit"] == "0123abc" and where["git_dirty"] is dirty


@pytest.mark.parametrize("args", [(), ("frobnicate",), ("collect",), ("run", "soon")])
def test_without_a_known_subcommand_it_prints_its_usage_and_fails(args):
    done = gpu_session(*args)
    assert done.returncode != 0
    assert "usage:" in done.stderr and "prepare" in done.stderr and "collect DIR" in done.stderr


def test_the_dry_run_plans_the_benchmark_then_every_full_scale_script_in_order(tmp_path):
    commands = planned(420, tmp_path)
    assert [c[0] if c[0] == "nvidia-smi" else c[1] for c in commands] == ORDER
    assert commands[1][2:] == ["--output", f"{tmp_path}/meta_step_gpu.txt"]
    for command in commands[2:]:
        assert command[0] == "python3" and "--no-progress" in command and "--smoke" not in command
    assert commands[2][commands[2].index("--runs") + 1:] == ["maml-5way-1shot"]  # the headline run first


def test_the_dry_run_starts_no_step_when_less_than_30_seconds_would_be_left(tmp_path):
    assert planned(40, tmp_path) == []


def load_by_path(monkeypatch, path):
    """Import ``path`` as a module, with its folder on ``sys.path`` (as running it would), undone afterwards."""
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, path.stem, module)
    spec.loader.exec_module(module)
    return module


class Parsed(Exception):
    def __init__(self, args):
        self.args_ = args


def test_every_planned_command_has_only_real_options_and_runs_only_what_the_device_has(tmp_path, monkeypatch):
    """Each script's own parser accepts the planned options; the gradient-based script gets all its runs, the
    closed-form script its Omniglot runs (CIFAR-FS needs CIFAR-100, which the device does not have)."""
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(parse(self, args, namespace))  # a wrong option or run name exits here (SystemExit)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    runs, modules = {}, {}
    for command in planned(420, tmp_path)[1:]:
        path = ROOT / command[1]
        modules[path.stem] = modules.get(path.stem) or load_by_path(monkeypatch, path)
        with pytest.raises(Parsed) as parsed:
            modules[path.stem].main(command[2:])
        runs.setdefault(path.stem, []).extend(getattr(parsed.value.args_, "runs", None) or [])
    assert runs["full_scale_gradient"] == [run.name for run in modules["full_scale_gradient"].RUNS]
    assert runs["full_scale_closed_form"] == [run.name for run in modules["full_scale_closed_form"].RUNS
                                              if run.dataset == "omniglot"]


def test_run_refuses_to_start_without_an_output_folder(tmp_path):
    done = gpu_session("run", "60", OUT=str(tmp_path / "missing"))
    assert done.returncode != 0 and "$OUT" in done.stderr
