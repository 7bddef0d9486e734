"""``import metabook_learn``: the names a student needs, cheap to import, each documented."""
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import metabook_learn

ROOT = Path(__file__).resolve().parent.parent


def test_import_metabook_is_cheap_and_each_name_loads_when_first_used():
    code = ("import sys, metabook_learn; loaded = sorted(m for m in sys.modules if m.startswith('metabook_learn.')); "
            "print(loaded); metabook_learn.TrainConfig; print('metabook_learn.training' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}).stdout.splitlines()
    assert out == ["['metabook_learn.runtime']", "True"]


def test_the_public_names_are_the_ones_a_student_needs_and_each_has_a_docstring():
    for name in ("NWayKShotSampler", "SinusoidSampler", "load_omniglot", "ConvNet", "InnerLoop", "methods",
                 "Method", "register", "TrainConfig", "train", "evaluate", "pretrained"):
        assert name in metabook_learn.__all__, name
    for name in metabook_learn.__all__:
        if name != "__version__":
            assert (getattr(metabook_learn, name).__doc__ or "").strip(), f"metabook_learn.{name} has no docstring"
    assert metabook_learn.methods.get("maml") is metabook_learn.get_method("maml")
    assert metabook_learn.evaluate is importlib.import_module("metabook_learn.evaluation").evaluate


def test_every_public_function_and_class_of_every_module_has_a_docstring():
    undocumented = []
    for info in pkgutil.walk_packages(metabook_learn.__path__, "metabook_learn."):
        if info.name == "metabook_learn.widgets":  # needs ipywidgets, a notebook dependency
            continue
        module = importlib.import_module(info.name)
        if not (module.__doc__ or "").strip():
            undocumented.append(info.name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == info.name:
                if not (obj.__doc__ or "").strip():
                    undocumented.append(f"{info.name}.{name}")
    assert not undocumented, undocumented
