"""Counts in words, ``1 message`` and ``2 messages``, for every command's lines.

Apart from the modules that print them, so that ``fetch`` and the queue tools word a
count alike without importing each other."""

from __future__ import annotations

__all__ = ["messages"]


def messages(count: int) -> str:
    """``1 message``, ``2 messages``."""
    return f"{count} message" if count == 1 else f"{count} messages"
