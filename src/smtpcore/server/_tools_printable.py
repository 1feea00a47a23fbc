"""What the command-line tools print of a peer's words, made safe for a terminal.

Its own module because every part of ``send`` and ``fetch`` that prints a reply, an
address or a header field needs it, and none of them should need another's module
for it. It is :func:`~smtpcore.server.log.loggable`, the server log's safeguard,
under the name the tools' callers read.
"""

from __future__ import annotations

from smtpcore.server.log import loggable

__all__ = ["printable"]


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters, escape sequences and bidi
    controls shown as ``\\x1b`` and the like, never sent raw, as in the server's log
    lines. Every line the tools print that holds a peer's words (a reply, an
    address, a header) goes through it."""
    return loggable(text)
