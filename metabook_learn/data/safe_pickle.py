"""Reading pickled data sets without letting the file run code.

A pickle is a small program: its ``GLOBAL`` and ``REDUCE`` instructions can
import any function and call it, so ``pickle.load`` on a file from the
internet may run ``os.system("...")``. The mini-ImageNet caches and the
CIFAR-100 archive are pickles, so they are read with an unpickler that may
only build plain containers (dicts, lists, tuples, strings, numbers, bytes)
and NumPy arrays. Any other import is refused before it happens.
"""
from __future__ import annotations

import codecs
import io
import os
import pickle
from typing import BinaryIO

import numpy as np

from metabook_learn.data.storage import DataError

__all__ = ["UnsafePickleError", "RestrictedUnpickler", "safe_load", "allowed_globals"]


class UnsafePickleError(DataError):
    """The pickle asked for something other than containers and NumPy arrays."""


def allowed_globals() -> dict[tuple[str, str], object]:
    """The only ``(module, name)`` pairs a pickle may import, mapped to the objects used.

    NumPy 2 renamed ``numpy.core`` to ``numpy._core``; pickles written by
    either version name their own path, so both are accepted and resolved to
    whichever the installed NumPy has.
    """
    try:  # NumPy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - NumPy 1
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes ``bytes`` at pickle protocol 2 as _codecs.encode(text, "latin1").
        ("_codecs", "encode"): codecs.encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct  # arrays, protocols 0-4
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar  # numpy scalars such as np.int64(3)
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # arrays, protocol 5
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose imports are limited to ``allowed_globals()``."""

    _allowed = None

    def find_class(self, module: str, name: str):
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = allowed_globals()
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load a pickle that asks for {module}.{name}: data set pickles may only "
                "hold containers and NumPy arrays, so this file is not the expected data (or is "
                "malicious); get a fresh copy from a source you trust"
            ) from None


def safe_load(source: str | os.PathLike | bytes | BinaryIO, encoding: str = "ASCII") -> object:
    """Unpickle ``source`` (a path, bytes or a binary file) allowing only containers and arrays.

    ``encoding`` is passed to the unpickler for pickles written by Python 2:
    ``"bytes"`` keeps their strings as ``bytes`` (the CIFAR archives' keys are
    ``b"data"``), ``"latin1"`` decodes them.
    """
    if isinstance(source, (bytes, bytearray)):
        return _load(io.BytesIO(source), encoding, "the given bytes")
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as stream:
            return _load(stream, encoding, str(source))
    return _load(source, encoding, getattr(source, "name", "the given stream"))


def _load(stream: BinaryIO, encoding: str, where: str) -> object:
    try:
        return RestrictedUnpickler(stream, encoding=encoding).load()
    except UnsafePickleError as error:
        raise UnsafePickleError(f"{where}: {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise DataError(f"{where} is not a readable pickle ({' '.join(str(error).split())}); replace it") from None
