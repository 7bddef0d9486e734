"""The restricted unpickler reads containers and NumPy arrays, and nothing that could run code."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from metabook_learn.data.safe_pickle import UnsafePickleError, safe_load
from metabook_learn.data.storage import DataError

pytestmark = pytest.mark.usefixtures("no_data_environment")


class RunsAShellCommand:
    """What a malicious pickle looks like: unpickling calls os.system(command)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class CallsEval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_os_system_in_a_pickle_is_refused_before_it_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"image_data": RunsAShellCommand(f"touch {marker}")}, protocol=protocol)
    with pytest.raises(UnsafePickleError, match=r"refusing to load a pickle that asks for (posix|nt|os)\.system"):
        safe_load(payload)
    assert not marker.exists()


def test_builtins_eval_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([CallsEval()]))
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval") as error:
        safe_load(path)
    assert str(path) in str(error.value)


def test_unsafe_pickle_error_is_a_data_error():
    assert issubclass(UnsafePickleError, DataError)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_containers_and_arrays_load(protocol):
    content = {
        "image_data": np.arange(2 * 84 * 84 * 3, dtype=np.uint8).reshape(2, 84, 84, 3),
        "class_dict": {"n01": [0, np.int64(1)]},
        b"bytes key": (1.5, None, True, "text", b"raw"),
        "floats": np.linspace(0, 1, 5, dtype=np.float32),
    }
    loaded = safe_load(pickle.dumps(content, protocol=protocol))
    assert np.array_equal(loaded["image_data"], content["image_data"])
    assert loaded["image_data"].dtype == np.uint8
    assert loaded["class_dict"] == {"n01": [0, 1]}
    assert loaded[b"bytes key"] == (1.5, None, True, "text", b"raw")
    assert np.array_equal(loaded["floats"], content["floats"])


def test_numpy_1_module_paths_load():
    # NumPy 2 writes numpy._core...; NumPy 1 wrote numpy.core... At protocol 2 the
    # module names are plain text lines, so a NumPy-1 pickle can be made by renaming.
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    payload = pickle.dumps(array, protocol=2)
    numpy_1_payload = payload.replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray\n_reconstruct" in numpy_1_payload
    assert np.array_equal(safe_load(numpy_1_payload), array)


def test_garbage_is_a_clear_error():
    with pytest.raises(DataError, match="not a readable pickle"):
        safe_load(b"this is not a pickle")
    with pytest.raises(DataError, match="not a readable pickle"):
        safe_load(pickle.dumps({"a": 1})[:-3])  # truncated
