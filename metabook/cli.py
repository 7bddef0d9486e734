"""The command line: ``python -m metabook COMMAND ...``.

Each command lives in the module of the idea it belongs to and registers
itself here through an ``add_parser(subparsers)`` function; this file only
wires them together and turns expected failures into one-line messages.
"""
from __future__ import annotations

import argparse
import sys

from metabook.errors import UserError

__all__ = ["main", "UserError", "count_type", "rate_type"]


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (exit status 2), not the whole usage."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message}; see {self.prog} --help\n")


def _option_type(flag: str, parse, check):
    """An argparse ``type``: ``check(flag, parse(text))``, its errors reported by argparse as one line.

    The checks are those of the Python API (:mod:`metabook.validation`), so an option and the field it
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
    from metabook import validation

    return _option_type(flag, int, lambda name, value: validation.count(name, value, minimum, meaning))


def rate_type(flag: str, zero_ok: bool = False):
    """The argparse ``type`` of a learning rate or step size: finite and positive (or zero with ``zero_ok``)."""
    from metabook import validation

    return _option_type(flag, float, lambda name, value: validation.rate(name, value, zero_ok))


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m metabook",
        description="metabook: data sets, meta-training and evaluation from the command line.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for add_parser in _command_modules():
        add_parser(subparsers)
    return parser


def _command_modules():
    # Imported lazily so that `--help` of one command does not pay for the others.
    from metabook import report_cli, train_cli
    from metabook.data import cli as data_cli

    return [data_cli.add_parser, train_cli.add_parser, report_cli.add_parser]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
