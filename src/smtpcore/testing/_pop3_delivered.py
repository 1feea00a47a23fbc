"""``delivered-intact``: messages submitted over SMTP come back octet for octet over POP3.

The check takes a snapshot of the mailbox, has the
:class:`~smtpcore.testing._delivery.Delivery` submit its test messages, then
polls new sessions (a maildrop is fixed for a session once it is locked, RFC
1939 §4) until every marker is found among the messages that were not there
before, or the delivery's ``wait`` has passed. Each message is then read with
RETR and TOP and compared, unstuffed, with what was sent: the body octet for
octet, and every header line sent present in the header (the MTA adds its
own). Sessions end as every session of the battery does: without QUIT once a
message was touched, so nothing is deleted. Only
:func:`~smtpcore.testing._pop3_deletion.delete_delivered`, asked for
explicitly, deletes, and only the battery's own messages.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Final

from smtpcore.testing._battery import Failed, Skipped, unjudged
from smtpcore.testing._delivery import (
    MARKER_FIELD,
    DeliveredMessage,
    DeliveryFailed,
    first_difference,
)
from smtpcore.testing._pop3_mailbox import (
    HEADER_ONLY,
    MAX_HEADER_SECTION,
    Before,
    Header,
    Known,
    Listed,
    Look,
    id_named_another,
    listed_before,
    look,
    mailbox_listing,
    new_marker_at,
)
from smtpcore.testing._pop3_probe import POP3Probe
from smtpcore.testing._pop3_responses import ResponseBound, StalledResponse, ask, lines_of
from smtpcore.testing._pop3_wire import POP3Wire

__all__ = [
    "MAX_WAIT",
    "check_delivered_intact",
    "poll_sleeps",
]

MAX_WAIT: Final = 600.0
"""The longest ``deliver_wait``, in seconds: an MTA that takes longer is not tested."""
_FIRST_SLEEP: Final = 0.25
_SLEEP_GROWTH: Final = 1.5
_LONGEST_SLEEP: Final = 10.0
_MAX_POLLS: Final = 100
"""At most this many sessions look for the messages: with sleeps that grow from a
quarter of a second to ten, :data:`MAX_WAIT` takes about 70."""


def poll_sleeps(wait: float) -> Iterator[float]:
    """The sleeps between two looks at the mailbox, which add up to ``wait``: short at
    first (a local MTA delivers at once), then longer, so that a long wait logs in a
    few dozen times, not thousands (each look is a session that locks the maildrop,
    RFC 1939 §8)."""
    left, sleep = wait, _FIRST_SLEEP
    for _ in range(_MAX_POLLS - 1):
        if left <= 0:
            return
        step = left if left < 2 * sleep else sleep
        yield step
        left -= step
        sleep = min(sleep * _SLEEP_GROWTH, _LONGEST_SLEEP)


class _Mailbox:
    """The poll's reading of which test message is which: message number, then ``TOP
    n 0`` (:func:`~smtpcore.testing._pop3_mailbox.new_marker_at`), then the marker.
    ``before`` holds the unique-ids listed before the delivery, with their sizes: a
    message listed under one at its size is not read
    (:func:`~smtpcore.testing._pop3_mailbox.listed_before`). The poll looks many
    times, so ``markers`` keeps each marker read by unique-id and LIST's size, the
    rule ``listed_before`` applies: a server whose ids are positions gives an id to
    another message, of another size, which is read. ``named`` holds what each id
    named first (None for no test message; every id of ``before``), and ``reused``
    each test message found under an id that named another message
    (:func:`~smtpcore.testing._pop3_mailbox.id_named_another`). A message whose
    header was not read (refused, or its response ran past LIST's size) is in
    neither: that says nothing of which message it is. A message with no unique-id
    is read at every look: its number names it in one session only (RFC 1939 §5)."""

    def __init__(self, before: Before) -> None:
        self.before = before
        self.by_uid = False
        self.markers: Known = {}
        self.named: dict[bytes, bytes | None] = dict.fromkeys(before)
        self.uids: dict[bytes, tuple[bytes, int | None]] = {}
        """Each test message's unique-id and size, by marker, as found."""
        self.reused: dict[bytes, bytes] = {}

    def find(self, probe: POP3Probe, wanted: set[bytes], *, afresh: bool = False) -> Look:
        """A look (:func:`~smtpcore.testing._pop3_mailbox.look`) at every message not
        listed before the delivery; ``afresh``, reading again those whose marker was
        kept, that the session shows what each one's header is."""

        def read(client: POP3Wire, number: int, listed: Listed) -> Header:
            header = new_marker_at(client, number, listed)
            if listed.uid is not None and header.read:
                self._name(listed.uid, header.marker, wanted)
            return header

        found = look(probe, self._new, read, {} if afresh else self.markers)
        self.by_uid = found.by_uid
        for number, marker in found.markers.items():
            listed = found.listing[number]
            if marker in wanted and listed.uid is not None:
                self.uids[marker] = (listed.uid, listed.size)
        return found

    def _new(self, listed: Listed) -> bool:
        """Whether a message so listed was not in the mailbox before the delivery."""
        return not listed_before(self.before, listed)

    def _name(self, uid: bytes, marker: bytes | None, wanted: set[bytes]) -> None:
        """Note what ``uid`` names now, a test message found under an id that named
        another message first among them."""
        if id_named_another(uid, marker, self.named, wanted) and marker in wanted:
            self.reused[marker] = uid
        self.named.setdefault(uid, marker)


def _whole(message: DeliveredMessage) -> ResponseBound:
    """What RETR, or TOP of every body line, of test message ``message`` may bring: a
    header section within :data:`~smtpcore.testing._pop3_mailbox.MAX_HEADER_SECTION`
    (the MTA's fields, then those sent) and the body sent, its lines at most doubled
    (see :func:`~smtpcore.testing._pop3_mailbox.listed_size`)."""
    return ResponseBound(
        MAX_HEADER_SECTION + 2 * len(message.body) + 2,
        f"more than a header section and twice the {len(message.body)}-octet body sent",
    )


def _snapshot(probe: POP3Probe) -> _Mailbox:
    """The mailbox before the delivery: its unique-ids and their messages' sizes, which
    no look reads again while both are the same
    (:func:`~smtpcore.testing._pop3_mailbox.listed_before`). Its transcript is kept
    short, as a look's that found nothing (:func:`_await_delivery`)."""
    client = probe.session()
    listing, _ = mailbox_listing(client, probe.line_said)
    probe.end(client)
    probe.keep_little_of(client)
    return _Mailbox({uid: size for uid, size in listing.values() if uid is not None})


def _await_delivery(probe: POP3Probe, mailbox: _Mailbox, wanted: set[bytes], wait: float) -> Look:
    """A look whose session finds every wanted marker, or the last one, once the
    sleeps of :func:`poll_sleeps` have covered ``wait`` seconds. The numbers are that
    session's, and so is every marker read without UIDL.
    Each session before the last keeps a short transcript
    (:meth:`~smtpcore.testing._pop3_probe.POP3Probe.keep_little_of`): a hundred
    looks at a large mailbox would otherwise hold all that each one read. The last
    reads every header again, and keeps the session it ends in whole: where a test
    message was never found, what the server sent in its place is the evidence (a
    session of it that a response overran keeps a short transcript, as above)."""
    for sleep in poll_sleeps(wait):
        found = mailbox.find(probe, wanted)
        if set(_wanted_in(found, wanted)) == wanted:
            return found
        probe.end(found.client)
        probe.keep_little_of(found.client)
        time.sleep(sleep)
    return mailbox.find(probe, wanted, afresh=True)


def _wanted_in(found: Look, wanted: set[bytes]) -> dict[bytes, int]:
    """The wanted markers a look found, each with its message number."""
    return {marker: n for n, marker in found.markers.items() if marker in wanted and marker}


def _header_problem(what: str, got: bytes, message: DeliveredMessage) -> str | None:
    """A header line sent that is not in ``got``'s header, byte for byte."""
    header = set(lines_of(got.partition(b"\r\n\r\n")[0] + b"\r\n"))
    for line in lines_of(message.content.partition(b"\r\n\r\n")[0] + b"\r\n"):
        if line not in header:
            return f"{what} lacks the header line sent as {line!r}"
    return None


def _body_problem(what: str, got: bytes, expected: bytes) -> str | None:
    if got == expected:
        return None
    return f"{what} gave a body other than the one sent, {first_difference(got, expected)}"


def _from_marker(content: bytes, message: DeliveredMessage) -> bytes | None:
    """``content`` from the marker's line on: what the MTA put before it is its own."""
    at = content.find(MARKER_FIELD + b": " + message.marker + b"\r\n")
    return content[at:] if at >= 0 else None


def _sent_unended(partial: bytes, message: DeliveredMessage, expected: bytes) -> bool:
    """Whether a response that stalled is the whole of ``message``, ``expected`` its
    body, but for the CRLF of its last line: the ``.CRLF`` meant as the terminator
    came right after the last line's text (RFC 1939 §3). Only where the body is
    known can a line that ends in a period be told from that."""
    if not partial.endswith(b".\r\n"):
        return False
    got = _from_marker(partial[:-3] + b"\r\n", message)
    return got is not None and got.partition(b"\r\n\r\n")[2] == expected


def _message_problems(client: POP3Wire, number: int, message: DeliveredMessage) -> list[str]:
    """What RETR, ``TOP n 0`` and TOP of every body line give wrong for ``message``
    (RFC 1939 §3: unstuffed, the lines as stored; §7: TOP gives the header, the blank
    line and that many body lines)."""
    body_lines = len(lines_of(message.body))
    whole = _whole(message)
    reads = [(b"RETR %d" % number, message.body, whole), (b"TOP %d 0" % number, b"", HEADER_ONLY)]
    reads.append((b"TOP %d %d" % (number, body_lines), message.body, whole))
    for command, expected, bound in reads:
        what = f"{command.decode()} ({message.name})"
        try:
            answer = ask(client, command, bound=bound)
        except StalledResponse as exc:
            if not _sent_unended(exc.partial.content(), message, expected):
                raise
            return [
                f"{what} stalled after the message's last line, sent with no CRLF before "
                "the terminating dot line, which so never came alone on its line (RFC 1939 §3)"
            ]
        if not answer.ok:
            if command.startswith(b"TOP"):
                unjudged(client, f"{what} got {answer}: TOP was not compared")
                return []
            return [f"{what} got {answer}"]
        got = _from_marker(answer.content(), message)
        if got is None:
            return [f"{what} has no '{MARKER_FIELD.decode()}: {message.marker.decode()}' line"]
        problem = _header_problem(what, got, message) or _body_problem(
            what, got.partition(b"\r\n\r\n")[2], expected
        )
        if problem:  # what follows may be the rest of a message that ended early
            return [problem]
    return []


def check_delivered_intact(probe: POP3Probe) -> str:
    """Messages submitted over SMTP come back intact in RETR and TOP (RFC 1939 §3, §7).

    Skipped unless a delivery was asked for (``deliver_via``). The test
    messages (a lone dot line, ``..`` and ``.x`` lines, a last line submitted
    without CRLF, which the SMTP client ends, 998-octet lines, 8-bit octets where
    the SMTP server offers 8BITMIME) are submitted, awaited, and each one's body must come back
    octet for octet, and each header line sent must be in its header. A test
    message found under a unique-id another message had before the delivery
    fails it too (RFC 1939 §7). The messages stay in the mailbox (see
    :func:`delete_delivered`).
    """
    delivery = probe.delivery
    if delivery is None:
        raise Skipped("no delivery was asked for: give deliver_via (--deliver-via HOST:PORT)")
    mailbox = _snapshot(probe)
    try:
        messages = delivery.submit()
    except DeliveryFailed as exc:
        raise Failed(str(exc)) from None
    wanted = {message.marker for message in messages}
    last = _await_delivery(probe, mailbox, wanted, delivery.wait)
    client, found = last.client, _wanted_in(last, wanted)
    for marker, (uid, size) in mailbox.uids.items():
        delivery.uids[marker], delivery.sizes[marker] = uid, size
    delivery.uidl = mailbox.by_uid
    delivery.found = len(found)
    delivery.before = mailbox.before
    probe.problems.extend(_reused_id_problems(probe, messages, mailbox))
    missing = [m.name for m in messages if m.marker not in found]
    if missing:
        probe.end(client)
        raise Failed(
            f"{len(missing)} of {len(messages)} test messages ({', '.join(missing)}) were not "
            f"in the mailbox {delivery.wait:g} s after the SMTP server took them"
            + _overruns_said(last.overran)
        )
    for message in messages:
        problems = _message_problems(client, found[message.marker], message)
        if problems:
            raise Failed("; ".join(problems))
    probe.end(client)
    return _summary(client, messages)


def _overruns_said(overran: int) -> str:
    """What the failure "not in the mailbox" adds where the last look left messages
    unread, their response having run past LIST's size: a test message may be among
    them, LIST understating it."""
    if not overran:
        return ""
    them = "1 message was" if overran == 1 else f"{overran} messages were"
    return (
        f"; {them} not read, the response to TOP n 0 (or RETR) running over twice the "
        "size LIST gives and 4 octets (RFC 1939 §5: a scan listing gives a message's "
        "exact size)"
    )


def _reused_id_problems(
    probe: POP3Probe, messages: list[DeliveredMessage], mailbox: _Mailbox
) -> list[str]:
    """A problem for each test message the poll found under a unique-id that named
    another message, before the delivery or earlier in the poll: an id names one
    message, persists, and is never reused (RFC 1939 §7)."""
    problems = []
    for message in messages:
        uid = mailbox.reused.get(message.marker)
        if uid is None:
            continue
        when = "before the delivery" if uid in mailbox.before else "earlier in the poll"
        problems.append(
            f"UIDL lists test message {message.name} under {probe.line_said(uid)}, the "
            f"unique-id of another message {when} (RFC 1939 §7: a unique-id names one "
            "message, and a server never gives it to another)"
        )
    return problems


def _summary(client: POP3Wire, messages: list[DeliveredMessage]) -> str:
    names = [message.name for message in messages]
    if "eight-bit" not in names:
        unjudged(client, "the SMTP server offers no 8BITMIME, so no 8-bit message was sent")
    return f"{len(messages)} messages delivered over SMTP came back intact ({', '.join(names)})"
