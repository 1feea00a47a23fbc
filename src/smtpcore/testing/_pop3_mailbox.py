"""Which message of a mailbox is which, for ``delivered-intact`` and the deletion.

One listing per session (:func:`mailbox_listing`: each message number with its
unique-id and its size) and two ways to read a message's marker: leniently for
a message not yet known to be a test message (:func:`new_marker_at`: it may be
the user's own mail, whose header RFC 5322 does not bound), strictly for one
already known to be (:func:`own_marker_at`, :data:`HEADER_ONLY`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, NamedTuple

from smtpcore.testing._battery import Failed
from smtpcore.testing._delivery import marker_of
from smtpcore.testing._pop3_probe import POP3Response, POP3Wire, ResponseBound, ask, wire_number
from smtpcore.testing._wire import MAX_RECEIVED

__all__ = [
    "HEADER_ONLY",
    "MAX_HEADER_SECTION",
    "Before",
    "Listed",
    "Listing",
    "Said",
    "listed_before",
    "listed_size",
    "mailbox_listing",
    "new_marker_at",
    "new_markers_at",
    "own_marker_at",
    "repeats_an_id",
]

MAX_HEADER_SECTION: Final = 256 << 10
"""The most octets ``TOP n 0`` of a test message may bring, and the most of any
message's header a look for a marker keeps: a header section and its blank line (RFC
1939 §7). RFC 5322 sets no limit (Exim's ``header_maxsize`` defaults to 1 MB), so a
user's message may pass it; a test message's header is the MTA's trace fields and a
few of the battery's, its marker among them."""
HEADER_ONLY: Final = ResponseBound(
    MAX_HEADER_SECTION, "more than a header section: TOP n 0 gives the header and a blank line"
)
"""The bound on ``TOP n 0`` of a message known to be a test message."""
_MAX_HEADER_READ: Final = 1 << 20
"""A new message larger than this (by LIST) is not read with RETR to look for a marker
where TOP is refused."""

Said = Callable[[bytes], str]
"""How a summary quotes a line the server sent: :meth:`POP3Probe.line_said`, which
hides the password before it cuts."""
Before = dict[bytes, int | None]
"""The mailbox before the delivery: each unique-id, and the size LIST gave its message."""


class Listed(NamedTuple):
    """One message of a listing: its unique-id (RFC 1939 §7), None where UIDL is
    refused or leaves it out, and its size in octets by LIST (§5), None where that is
    no number."""

    uid: bytes | None
    size: int | None


Listing = dict[int, Listed]
"""Message number to its unique-id and size: every message LIST gives."""


def mailbox_listing(client: POP3Wire, said: Said) -> tuple[Listing, bool]:
    """Every message LIST gives (RFC 1939 §5: it lists every one), each with the
    unique-id UIDL gave it, if any, and its size; and whether UIDL was taken. A UIDL
    that leaves a message out must not hide it; its number then names it in this
    session only."""
    answer = ask(client, b"UIDL")
    uids = _listed(answer, said) if answer.ok else {}
    scan = ask(client, b"LIST")
    if not scan.ok:
        raise Failed(f"LIST was answered {scan} in the TRANSACTION state (RFC 1939 §5)")
    sizes = _listed(scan, said)
    return {n: Listed(uids.get(n), wire_number(size)) for n, size in sizes.items()}, answer.ok


def _listed(answer: POP3Response, said: Said) -> dict[int, bytes]:
    """A scan or unique-id listing's lines: each message number, ASCII digits,
    bounded (:func:`~smtpcore.testing._pop3_probe.wire_number`), with the word after
    it. A malformed line is quoted by ``said``."""
    listed: dict[int, bytes] = {}
    for line in answer.lines:
        words = line.rstrip(b"\r\n").split(b" ")
        number = wire_number(words[0])
        if len(words) < 2 or number is None:
            raise Failed(
                f"a scan or unique-id listing gave the line {said(line)} (RFC 1939 §5, §7)"
            )
        listed[number] = words[1]
    return listed


def repeats_an_id(listing: Listing) -> bool:
    """Whether UIDL gives one unique-id to two messages (RFC 1939 §7 forbids it)."""
    uids = [listed.uid for listed in listing.values() if listed.uid is not None]
    return len(set(uids)) != len(uids)


def listed_before(before: Before, listed: Listed) -> bool:
    """Whether a message so ``listed`` is one the mailbox had before the delivery: its
    unique-id and its size as then. A unique-id names one message and is never given
    to another (RFC 1939 §7), but some servers give one to the next message (ids by
    position); a message with a size of its own is not the one the id named, and is
    read."""
    uid = listed.uid
    return uid is not None and uid in before and before[uid] == listed.size


def listed_size(size: int | None, *, kept: int | None = None) -> ResponseBound:
    """What RETR, or ``TOP n 0``, of a message LIST gives ``size`` octets may bring:
    each line at most doubled (a stuffing dot, a CR before a bare LF) and a CRLF after
    a last line that had none (RFC 1939 §3); where LIST gave no number, what a
    connection may bring. ``kept``: see :class:`ResponseBound`."""
    if size is None:
        return ResponseBound(MAX_RECEIVED, "more than a connection may bring", kept)
    reason = f"over twice the {size} octets LIST gives, RFC 1939 §5"
    return ResponseBound(2 * size + 2, reason, kept)


def new_marker_at(client: POP3Wire, number: int, size: int | None) -> tuple[bool, bytes | None]:
    """Whether the header of message ``number``, not yet known to be a test message and
    ``size`` octets by LIST, was read, and its marker, if any: read with ``TOP n 0``,
    or with RETR where TOP is refused (RFC 1939 §7 makes TOP optional) and the size
    is up to :data:`_MAX_HEADER_READ`. The response may be the user's own mail, with
    a header of any size, or no blank line at all: it is bounded by LIST's size, and
    only its first :data:`MAX_HEADER_SECTION` octets are kept, where a test message's
    marker is; past them the message is simply not a test message."""
    bound = listed_size(size, kept=MAX_HEADER_SECTION)
    answer = ask(client, b"TOP %d 0" % number, bound=bound)
    if not answer.ok:
        if size is None or size > _MAX_HEADER_READ:
            return False, None
        answer = ask(client, b"RETR %d" % number, bound=bound)
    return (True, marker_of(answer.content())) if answer.ok else (False, None)


def new_markers_at(client: POP3Wire, sizes: Mapping[int, int | None]) -> dict[int, bytes | None]:
    """Each message of ``sizes`` (number to LIST's size) whose header was read
    (:func:`new_marker_at`), with its marker, if any; one left out could not be read."""
    markers: dict[int, bytes | None] = {}
    for number, size in sizes.items():
        read, marker = new_marker_at(client, number, size)
        if read:
            markers[number] = marker
    return markers


def own_marker_at(client: POP3Wire, number: int) -> tuple[bool, bytes | None]:
    """Whether the header of message ``number``, known to be a test message, was read
    with ``TOP n 0`` (no RETR: a server may delete what was retrieved at QUIT), and
    its marker, if any; within :data:`HEADER_ONLY`, for a test message's header is
    small and a server that sends more is broken, or hostile."""
    answer = ask(client, b"TOP %d 0" % number, bound=HEADER_ONLY)
    return (True, marker_of(answer.content())) if answer.ok else (False, None)
