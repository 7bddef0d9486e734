"""The one exception every floor of metabook may raise for a failure its user can fix."""
from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A failure the user can fix; the command line prints it as one line, without a traceback."""
