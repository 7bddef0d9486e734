"""The command line: ``python -m metabook_learn COMMAND ...``.

Each command lives in the module of the idea it belongs to and registers
itself here through an ``add_parser(subparsers)`` function; this file only
wires them together and turns expected failures into one-line messages.
"""
from __future__ import annotations

import argparse
import sys

from metabook_learn.cli_options import OneLineParser, count_type, rate_type  # noqa: F401 (re-exported)
from metabook_learn.errors import UserError

__all__ = ["main", "UserError", "count_type", "rate_type"]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m metabook_learn",
        description="metabook: data sets, meta-training and evaluation from the command line.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for add_parser in _command_modules():
        add_parser(subparsers)
    return parser


def _command_modules():
    # Imported lazily so that `--help` of one command does not pay for the others.
    from metabook_learn import data_cli, report_cli, train_cli

    return [data_cli.add_parser, train_cli.add_parser, report_cli.add_parser]


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m metabook_learn`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    0: done; 1: an expected failure, printed as one line ``error: ...``; 130: interrupted.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
