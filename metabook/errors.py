"""The errors metabook raises for mistakes a user can fix, at the bottom of the package so every floor can raise them."""
from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A failure the user can fix; the command line prints it as one line, without a traceback."""
