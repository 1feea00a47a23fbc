"""What :meth:`~smtpcore._driver.BasePOP3Client.list` gives: one :class:`MessageListing` a message.

RFC 1939 §5 and §7 give a message's size and its unique-id in two listings,
LIST and UIDL; :func:`listing_of` joins them, message by message, and keeps a
unique-id the server gave to several messages from naming any one of them. A
value type of the public API, kept apart from the session that fetches it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MessageListing", "listing_of"]


@dataclass(frozen=True, slots=True)
class MessageListing:
    """One message of the maildrop: its number in this session, size and unique-id."""

    number: int
    size: int
    """Octets as the server counts them (RFC 1939 §5)."""
    uid: str | None
    """The unique-id (RFC 1939 §7), or ``None`` if the server has no UIDL, gave this
    message none, or gave its id to another message too (see ``repeated_uid``)."""
    repeated_uid: str | None = None
    """The unique-id the server gave this message and another one as well, which RFC
    1939 §7 forbids; only ``list(allow_repeated_uids=True)`` reads such a listing, and
    ``uid`` is then ``None``: the id names no one message, so a client that keeps the
    ids it has fetched must not take it for one."""

    def __post_init__(self) -> None:
        if self.uid is not None and self.repeated_uid is not None:
            raise ValueError("a message listed with a unique-id of its own has no repeated_uid")


def listing_of(sizes: Iterable[tuple[int, int]], uids: dict[int, str]) -> list[MessageListing]:
    """The messages LIST gave, each with the unique-id UIDL gave it, or, where UIDL gave
    that id to several messages, with none and the id as ``repeated_uid``."""
    given = Counter(uids.values())
    listing = []
    for number, size in sizes:
        uid = uids.get(number)
        if uid is not None and given[uid] > 1:
            listing.append(MessageListing(number, size, None, repeated_uid=uid))
        else:
            listing.append(MessageListing(number, size, uid))
    return listing
