"""Which message of a mailbox is which, for ``delivered-intact`` and the deletion.

One listing per session (:func:`mailbox_listing`: each message number with its
unique-id and its size), two ways to read a message's marker: leniently for a
message not yet known to be a test message (:func:`new_marker_at`: it may be the
user's own mail, whose header RFC 5322 does not bound), strictly for one already
known to be (:func:`own_marker_at`, :data:`HEADER_ONLY`); one loop that reads
them (:func:`markers_at`), a look that goes on past an overrun, within a bound
(:func:`look`), and one test for a unique-id given to another message
(:func:`id_named_another`).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from typing import Final, NamedTuple

from smtpcore._driver._header_octets import MAX_HEADER_SECTION
from smtpcore.testing._battery import Failed
from smtpcore.testing._delivery import marker_of
from smtpcore.testing._pop3_probe import POP3Probe
from smtpcore.testing._pop3_responses import (
    OverlongResponse,
    POP3Response,
    ResponseBound,
    ask,
    wire_number,
)
from smtpcore.testing._pop3_wire import POP3Wire
from smtpcore.testing._wire import MAX_RECEIVED

__all__ = [
    "HEADER_ONLY",
    "MAX_HEADER_SECTION",
    "Before",
    "Header",
    "HeaderReader",
    "Known",
    "Listed",
    "Listing",
    "Look",
    "Markers",
    "Said",
    "id_named_another",
    "listed_before",
    "listed_size",
    "look",
    "mailbox_listing",
    "markers_at",
    "new_marker_at",
    "own_marker_at",
    "repeats_an_id",
]

# MAX_HEADER_SECTION, the bound smtpcore reads a header section to, is the most octets
# TOP n 0 of a test message may bring, and the most of any message's header a look for
# a marker keeps: a header section and its blank line (RFC 1939 §7). RFC 5322 sets no
# limit (Exim's header_maxsize defaults to 1 MB), so a user's message may pass it; a
# test message's header is the MTA's trace fields and a few of the battery's, its
# marker among them.
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
    bounded (:func:`~smtpcore.testing._pop3_responses.wire_number`), with the word after
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
    each line at most doubled (a stuffing dot, a CR before a bare LF), a CRLF after a
    last line that had none (RFC 1939 §3), and, for ``TOP n 0`` of a message with no
    blank line (one of 0 to 2 octets, or with no CRLF at all), the blank line that
    ends the header it sends (§7): ``x`` comes as ``x`` CRLF CRLF, and ``.`` as ``..``
    CRLF CRLF, twice the size and 4. Where LIST gave no number, what a connection may
    bring. ``kept``: see :class:`ResponseBound`."""
    if size is None:
        return ResponseBound(MAX_RECEIVED, "more than a connection may bring", kept)
    reason = f"over twice the {size} octets LIST gives and 4, RFC 1939 §5, §7"
    return ResponseBound(2 * size + 4, reason, kept)


class Header(NamedTuple):
    """What reading a message's header gave: whether it was ``read``, its ``marker``
    if any, and whether the response ``overran`` its bound, which closed the session
    unread: an overrun says nothing of which message that is."""

    read: bool
    marker: bytes | None = None
    overran: bool = False


HeaderReader = Callable[[POP3Wire, int, Listed], Header]
"""Reads the header of message number ``n``, so listed, in a session."""


def new_marker_at(client: POP3Wire, number: int, listed: Listed) -> Header:
    """The header of message ``number``, not yet known to be a test message: read with
    ``TOP n 0``, or with RETR where TOP is refused (RFC 1939 §7 makes TOP optional)
    and LIST's size is up to :data:`_MAX_HEADER_READ`. The response may be the user's
    own mail, with a header of any size, or no blank line at all: it is bounded by
    LIST's size (:func:`listed_size`), and only its first :data:`MAX_HEADER_SECTION`
    octets are kept, where a test message's marker is. A response past that bound
    (some servers' LIST sizes are estimates, though §5 asks for the exact size) leaves
    the message unread, the session having been closed there."""
    size = listed.size
    bound = listed_size(size, kept=MAX_HEADER_SECTION)
    try:
        answer = ask(client, b"TOP %d 0" % number, bound=bound)
        if not answer.ok:
            if size is None or size > _MAX_HEADER_READ:
                return Header(False)
            answer = ask(client, b"RETR %d" % number, bound=bound)
    except OverlongResponse:
        return Header(False, overran=True)
    return Header(True, marker_of(answer.content())) if answer.ok else Header(False)


def own_marker_at(client: POP3Wire, number: int, listed: Listed) -> Header:
    """The header of message ``number``, known to be a test message, read with ``TOP n
    0`` (no RETR: a server may delete what was retrieved at QUIT); within
    :data:`HEADER_ONLY`, for a test message's header is small and a server that sends
    more is broken, or hostile: that fails the check."""
    answer = ask(client, b"TOP %d 0" % number, bound=HEADER_ONLY)
    return Header(True, marker_of(answer.content())) if answer.ok else Header(False)


class Markers(NamedTuple):
    """The headers read in a session (:func:`markers_at`)."""

    markers: dict[int, bytes | None]
    """Each message number whose header was read, with its marker, if any."""
    overran: bool
    """Whether a response overran, which closed the session before the rest was read."""


def markers_at(client: POP3Wire, listing: Listing, read: HeaderReader) -> Markers:
    """Each message of ``listing`` whose header ``read`` read, with its marker; the one
    loop behind every look for markers. It stops at a response that overran: the
    session is then closed, and the rest is for another."""
    markers: dict[int, bytes | None] = {}
    for number, listed in listing.items():
        header = read(client, number, listed)
        if header.read:
            markers[number] = header.marker
        if header.overran:
            return Markers(markers, True)
    return Markers(markers, False)


class Look(NamedTuple):
    """One look at the mailbox (:func:`look`): the session it ends in, still open, its
    listing, each message read, by number in that session, with its marker, and how
    many it left unread for their response ran past LIST's size in an earlier
    session of the look."""

    client: POP3Wire
    listing: Listing
    markers: dict[int, bytes | None]
    by_uid: bool
    overran: int = 0


Known = dict[tuple[bytes, int | None], bytes | None]
"""Markers read, by unique-id and LIST's size (the rule of :func:`listed_before`):
what a look need not read again."""


def look(
    probe: POP3Probe,
    wanted: Callable[[Listed], bool],
    read: HeaderReader,
    known: Known | None = None,
) -> Look:
    """Read the header of each message listed that ``wanted`` selects, with ``read``,
    past those ``known`` holds, adding to it what is read under a unique-id (a caller
    that looks many times keeps it: an id names one message across sessions, RFC 1939
    §7); a message without one is named by its number in this look only.

    Where a response overran (:func:`new_marker_at`), the session is closed and a new
    one reads on, past each message already read and each that overran at the same
    unique-id (or number) and size. A server whose ids and sizes hold still overruns
    once a message, so a look takes at most one session more than its first listing
    had messages to read; one that lists them anew each session (other ids, other
    sizes) would overrun forever, and past that many sessions the look fails."""
    known = {} if known is None else known
    by_number: dict[tuple[int, int | None], bytes | None] = {}
    overran: set[tuple[bytes | int, int | None]] = set()

    def read_once(client: POP3Wire, number: int, listed: Listed) -> Header:
        uid, size = listed
        key = (number if uid is None else uid, size)
        if key in overran:
            return Header(False)
        if uid is not None and (uid, size) in known:
            return Header(True, known[uid, size])
        if uid is None and (number, size) in by_number:
            return Header(True, by_number[number, size])
        header = read(client, number, listed)
        if header.overran:
            overran.add(key)
        elif header.read and uid is not None:
            known[uid, size] = header.marker
        elif header.read:
            by_number[number, size] = header.marker
        return header

    sessions, most = 0, 0
    while True:
        client = probe.session()
        listing, by_uid = mailbox_listing(client, probe.line_said)
        chosen = {n: listed for n, listed in listing.items() if wanted(listed)}
        sessions += 1
        most = most or len(chosen) + 1
        found = markers_at(client, chosen, read_once)
        if not found.overran:
            unread = sum(
                (n if listed.uid is None else listed.uid, listed.size) in overran
                for n, listed in chosen.items()
            )
            return Look(client, listing, found.markers, by_uid, unread)
        probe.end(client)
        if sessions >= most:
            messages = "1 message" if most == 2 else f"{most - 1} messages"
            raise Failed(
                f"responses kept overrunning twice LIST's size in {sessions} sessions, one "
                f"more than the {messages} the first listed to read: each session "
                "a TOP n 0 (or RETR) ran past twice the size LIST gives its message and 4 "
                "octets, and the next listed it anew, under another unique-id or size "
                "(RFC 1939 §5: a scan listing gives a message's exact size)"
            )
        probe.keep_little_of(client)


def id_named_another(
    uid: bytes | None,
    marker: bytes | None,
    named: Mapping[bytes, bytes | None],
    tests: Container[bytes],
) -> bool:
    """Whether ``uid``, now on a message showing ``marker``, named another message
    before (``named``: each id with the marker its message showed, None for none),
    one of the two a test message: RFC 1939 §7 says an id names one message and is
    never given to another, but a server whose ids are positions gives a removed
    message's id to the next."""
    if uid is None or uid not in named:
        return False
    return named[uid] != marker and (marker in tests or named[uid] in tests)
