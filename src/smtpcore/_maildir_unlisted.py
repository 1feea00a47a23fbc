"""The message files a Maildir listing leaves out, told to the operator once a listing.

A user who can write into his own Maildir plants as many files as he likes in a
moment (sparse ones, or copies under one unique name): a WARNING for each would let
him fill the log at every login. :class:`Unlisted` gathers them by reason, and says
each reason once, naming its first file and counting the others.
"""

from __future__ import annotations

import logging
from typing import Final

__all__ = ["HIDDEN", "NOT_SIZED_THIS_TIME", "TOO_LARGE_TO_SIZE", "UNREADABLE", "Unlisted"]

logger: Final = logging.getLogger("smtpcore.pop3.server")

TOO_LARGE_TO_SIZE: Final = (
    "maildrop: %r is not listed: %d octets, over the %d a message file without a ,W= "
    "size in its name is read to be sized (max_sized_by_reading); it stays where it is"
)
"""A file with no ``,W=`` larger than a listing may read: its POP3 size is exact octets
with CRLF line ends (RFC 1939 §5, §11), which only reading the whole file gives. The
operator may add its ``,W=`` size to its name, or move it."""

NOT_SIZED_THIS_TIME: Final = (
    "maildrop: %r is not listed: %d octets, not sized this time: the listing's reading "
    "budget is spent (max_sized_by_reading, %d octets for all the files without a ,W= "
    "size in their names, the smallest first); it stays where it is, and is listed at "
    "a later login once the sizes read before it are cached"
)
"""A file with no ``,W=`` that the listing's reading budget has no room left for."""

UNREADABLE: Final = (
    "maildrop: %r is not listed: %s; it stays where it is, and is listed, under the "
    "same unique-id, at the first login after the server can read it"
)
"""A file the server cannot read (another agent wrote it ``0600`` under its own uid, a
bad block): the rest of the maildrop is served, and this file, whose unique-id is its
name (RFC 1939 §7), comes in a later session as a message the client has not seen."""

HIDDEN: Final = (
    "maildrop: two files share the unique name of one message; %r is listed, %r "
    "is not (it shows once the other is gone): remove or rename one of them"
)
"""A unique-id names one message (RFC 1939 §7), and a second one made up for the copy
would change as its flags do. Only the operator can tell a copy (one a reader renamed
beside another) from a move caught half done, and which to keep."""


class Unlisted:
    """The files one listing leaves out, by reason (one of the formats above)."""

    def __init__(self) -> None:
        self._first: dict[str, tuple[object, ...]] = {}
        self._count: dict[str, int] = {}

    def add(self, reason: str, *args: object) -> None:
        """Note a file left out for ``reason``, ``args`` filling in its format."""
        self._first.setdefault(reason, args)
        self._count[reason] = self._count.get(reason, 0) + 1

    def warn(self) -> None:
        """One WARNING a reason: its first file, and how many others it left out."""
        for reason, args in self._first.items():
            others = self._count[reason] - 1
            if others:
                logger.warning(reason + " (%d other file(s) in this listing too)", *args, others)
            else:
                logger.warning(reason, *args)
