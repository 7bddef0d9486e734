"""What every command of the command line parses its options with: one-line errors, and the API's own checks.

A bad option is one line on stderr with exit status 2 (:class:`OneLineParser`),
and a numeric option is checked by :mod:`metabook_learn.validation`, the very
checks of the Python API, so an option and the field it fills accept the
same values (:func:`count_type`, :func:`rate_type`).
"""
from __future__ import annotations

import argparse

__all__ = ["OneLineParser", "count_type", "rate_type"]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (exit status 2), not the whole usage."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message}; see {self.prog} --help\n")


def _option_type(flag: str, parse, check):
    """An argparse ``type``: ``check(flag, parse(text))``, its errors reported by argparse as one line.

    The checks are those of the Python API (:mod:`metabook_learn.validation`), so an option and the field it
    fills accept the same values.
    """
    kind = "a whole number" if parse is int else "a number"

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        try:
            return check(flag, value)
        except (TypeError, ValueError) as error:  # argparse names the option already
            raise argparse.ArgumentTypeError(str(error).removeprefix(f"{flag} ")) from None

    return convert


def count_type(flag: str, minimum: int = 1, meaning: str = ""):
    """The argparse ``type`` of a count option: a whole number ``>= minimum`` (``meaning``: what the least means)."""
    from metabook_learn import validation

    return _option_type(flag, int, lambda name, value: validation.count(name, value, minimum, meaning))


def rate_type(flag: str, zero_ok: bool = False):
    """The argparse ``type`` of a learning rate or step size: finite and positive (or zero with ``zero_ok``)."""
    from metabook_learn import validation

    return _option_type(flag, float, lambda name, value: validation.rate(name, value, zero_ok))
