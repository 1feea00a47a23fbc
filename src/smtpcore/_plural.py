"""Counts in the words of log lines and free reply text: ``1 message``, ``2 messages``.

One home for the server's log lines, the queue tools, the turned-away log and
the POP3 server's free text after ``+OK`` (RFC 1939 §3), which sit in layers
that may not import one another (the routing layer, which imports nothing of
the library's but addresses and errors, words its one count itself). Never for a
reply whose text a client parses, such as STAT's ``+OK nn mm`` (RFC 1939 §5):
that stays digits.
"""

from __future__ import annotations

__all__ = ["counted", "messages"]


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, the noun plural unless the count is one (``plural``, or
    ``noun`` with an ``s``): ``1 address``, ``3 addresses``."""
    if count == 1:
        return f"1 {noun}"
    return f"{count} {plural if plural is not None else noun + 's'}"


def messages(count: int) -> str:
    """``1 message``, ``2 messages``, ``0 messages``."""
    return counted(count, "message")
