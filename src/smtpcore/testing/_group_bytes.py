"""A group of a client session as bytes on the wire, and where its replies fall due.

Shared by :class:`~smtpcore.testing.strategies.ClientSession`, which draws the
groups, and by :func:`~smtpcore.testing.play_smtp_session`, which writes them
(or the part of one a refusal leaves to send) to a server. Nothing here imports
Hypothesis: the player needs the standard library alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from smtpcore._dotstuff import DotEncoder
from smtpcore.smtp import Bdat, EndOfMessage, Event, MessageData
from smtpcore.smtp._commands import format_command

__all__ = ["encoded", "group_answer_points", "group_write", "pieces"]


def pieces(group: Sequence[Event | bytes]) -> list[tuple[Event | bytes, bytes, bool]]:
    """Each item's bytes (a hostile line's in one piece per line), with the item, and
    whether a reply is due once they are in.

    A command is due once its line is in (only CRLF ends a line, RFC 5321
    §2.3.8: a hostile line holding one is two lines), a BDAT once its octets
    are in (RFC 3030 §2), the end of DATA content once the final dot line is
    in. DATA content is dot-stuffed with its line endings left as they are, so
    that smuggling sequences reach the server.
    """
    out: list[tuple[Event | bytes, bytes, bool]] = []
    encoder: DotEncoder | None = None
    bdat_left = 0
    for item in group:
        if isinstance(item, bytes):
            start = 0
            while (end := item.find(b"\r\n", start)) >= 0:
                out.append((item, item[start : end + 2], True))
                start = end + 2
            if start < len(item):
                out.append((item, item[start:], False))
        elif isinstance(item, MessageData):
            if bdat_left:
                bdat_left -= len(item.data)
                out.append((item, item.data, bdat_left == 0))
                continue
            encoder = encoder or DotEncoder(normalize=False)
            out.append((item, encoder.encode(item.data), False))
        elif isinstance(item, EndOfMessage):
            out.append((item, (encoder or DotEncoder(normalize=False)).end(), True))
            encoder = None
        else:
            bdat_left = item.size if isinstance(item, Bdat) else 0
            out.append((item, format_command(item), not bdat_left))
    return out


def encoded(group: Sequence[Event | bytes]) -> list[tuple[bytes, bool]]:
    """Each item's bytes, and whether a reply is due once they are in (see :func:`pieces`)."""
    return [(piece, answered) for _, piece, answered in pieces(group)]


def group_write(group: Sequence[Event | bytes]) -> bytes:
    """The bytes of ``group``, as a client puts them on the wire in one write."""
    return b"".join(piece for piece, _ in encoded(group))


def group_answer_points(group: Sequence[Event | bytes]) -> list[int]:
    """The offsets in ``group``'s write at which a reply falls due."""
    offset, due = 0, []
    for piece, answered in encoded(group):
        offset += len(piece)
        if answered:
            due.append(offset)
    return due
