"""The root of the SMTP event classes, apart so that replies and commands share it."""

from __future__ import annotations

__all__ = ["Event"]


class Event:
    """Base class of every SMTP event: commands, replies and content."""

    __slots__ = ()
