"""``delivered-intact``: messages submitted over SMTP come back octet for octet over POP3.

The check takes a snapshot of the mailbox, has the
:class:`~smtpcore.testing._delivery.Delivery` submit its test messages, then
polls new sessions (a maildrop is fixed for a session once it is locked, RFC
1939 §4) until every marker is found among the messages that were not there
before, or the delivery's ``wait`` has passed. Each message is then read with
RETR and TOP and compared, unstuffed, with what was sent: the body octet for
octet, and every header line sent present in the header (the MTA adds its
own). Sessions end as every session of the battery does: without QUIT once a
message was touched, so nothing is deleted. Only :func:`delete_delivered`,
asked for explicitly, deletes, and only the battery's own messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Final, NamedTuple

from smtpcore.testing._battery import (
    SESSION_ENDINGS,
    Failed,
    Skipped,
    ending_said,
    unjudged,
)
from smtpcore.testing._delivery import (
    MARKER_FIELD,
    DeliveredMessage,
    Delivery,
    DeliveryFailed,
    first_difference,
    marker_of,
)
from smtpcore.testing._pop3_probe import (
    LoginRefused,
    POP3Probe,
    POP3Response,
    POP3Wire,
    ResponseBound,
    StalledResponse,
    ask,
    lines_of,
    wire_number,
)

__all__ = [
    "MAX_HEADER_SECTION",
    "MAX_WAIT",
    "check_delivered_intact",
    "delete_delivered",
    "failed_deletion_note",
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
_SHOWN_REUSED: Final = 3
"""At most this many reused unique-ids are named in a note; the rest are counted."""
_MAX_HEADER_READ: Final = 1 << 20
"""A new message larger than this (by LIST) is not read to look for a marker."""
MAX_HEADER_SECTION: Final = 256 << 10
"""The most octets ``TOP n 0`` may bring: a header section and its blank line (RFC 1939
§7). RFC 5322 sets no limit, but MTAs do (Postfix keeps 100 KiB of a header), and a
marker is near the top; a server that sends more is broken, or hostile."""
_HEADER_ONLY: Final = ResponseBound(
    MAX_HEADER_SECTION, "more than a header section: TOP n 0 gives the header and a blank line"
)

Before = dict[bytes, int | None]
"""The mailbox before the delivery: each unique-id, and the size LIST gave its message."""
Identities = dict[int, bytes | None]
"""Message number to its unique-id (RFC 1939 §7), or None where none is known (UIDL
refused, or a message it leaves out): such a message is read every time, for its
number names it in this session only (§5)."""
Said = Callable[[bytes], str]
"""How a summary quotes a line the server sent: :meth:`POP3Probe.line_said`, which
hides the password before it cuts."""


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


def _identities(client: POP3Wire, said: Said) -> tuple[Identities, bool]:
    """The mailbox's messages by unique-id, and whether UIDL was taken; where UIDL is
    refused, LIST's numbers, each with no unique-id."""
    uids = _unique_ids(client, said)
    if uids is not None:
        return dict(uids), True
    return dict.fromkeys(_scan(client, said)), False


def _unique_ids(client: POP3Wire, said: Said) -> dict[int, bytes] | None:
    """UIDL's listing, message number to unique-id, or None where UIDL is refused."""
    answer = ask(client, b"UIDL")
    return _listed(answer, said) if answer.ok else None


def _scan(client: POP3Wire, said: Said) -> dict[int, int | None]:
    """LIST's listing, message number to size in octets (None where the size is no
    number): every message, for LIST lists every one (RFC 1939 §5)."""
    scan = ask(client, b"LIST")
    if not scan.ok:
        raise Failed(f"LIST was answered {scan} in the TRANSACTION state (RFC 1939 §5)")
    return {number: wire_number(size) for number, size in _listed(scan, said).items()}


def _listed_before(before: Before, uid: bytes | None, size: int | None) -> bool:
    """Whether a message listed under ``uid`` at ``size`` octets is one the mailbox had
    before the delivery: its unique-id and its size as then. A unique-id names one
    message and is never given to another (RFC 1939 §7), but some servers give one
    to the next message (ids by position); a message with a size of its own is not
    the one the id named, and is read."""
    return uid is not None and uid in before and before[uid] == size


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


def _repeats_an_id(identities: Identities) -> bool:
    uids = [uid for uid in identities.values() if uid is not None]
    return len(set(uids)) != len(uids)


class _Mailbox:
    """The poll's reading of which test message is which: message number, then ``TOP
    n 0`` (:func:`_marker_at`), then the marker. ``before`` holds the unique-ids listed
    before the delivery, with their sizes: a message listed under one at its size is
    not read (:func:`_listed_before`). The poll looks many times, so each unique-id's
    marker is kept, that none is read twice, and each marker's unique-id, for
    :func:`delete_delivered`; ``reused``, each test message found under a unique-id
    of ``before``. A message with no unique-id is read at every look: its number
    names it in one session only (RFC 1939 §5)."""

    def __init__(self, before: Before) -> None:
        self.before = before
        self.by_uid = False
        self.markers: dict[bytes, bytes | None] = {}
        self.uids: dict[bytes, bytes] = {}
        self.reused: dict[bytes, bytes] = {}

    def find(self, client: POP3Wire, wanted: set[bytes], said: Said) -> dict[bytes, int]:
        """The wanted markers found in this session, each with its message number."""
        identities, self.by_uid = _identities(client, said)
        sizes = _scan(client, said) if self.before.keys() & set(identities.values()) else {}
        found: dict[bytes, int] = {}
        for number, uid in identities.items():
            if _listed_before(self.before, uid, sizes.get(number)):
                continue
            if uid is not None and uid in self.markers:
                marker = self.markers[uid]
            else:
                read, marker = _marker_at(client, number, retr=True)
                if uid is not None:
                    self.markers[uid] = marker
                if not read:
                    continue
            if marker is not None and marker in wanted:
                found[marker] = number
                if uid is not None:
                    self.uids[marker] = uid
                if uid is not None and uid in self.before:
                    self.reused[marker] = uid
        return found


def _markers_at(
    client: POP3Wire, numbers: Iterable[int], *, retr: bool
) -> dict[int, bytes | None]:
    """Each message of ``numbers`` whose header was read (:func:`_marker_at`), with its
    marker, if any; one left out could not be read. Read afresh: the sessions that
    delete and confirm trust no marker read in another session, for a server whose
    unique-ids are message numbers names another message with one once mail came or
    went (RFC 1939 §7)."""
    markers: dict[int, bytes | None] = {}
    for number in numbers:
        read, marker = _marker_at(client, number, retr=retr)
        if read:
            markers[number] = marker
    return markers


def _marker_at(client: POP3Wire, number: int, *, retr: bool) -> tuple[bool, bytes | None]:
    """Whether message ``number``'s header was read, and its marker, if any: read with
    ``TOP n 0``, or, if ``retr``, with RETR where TOP is refused (RFC 1939 §7 makes
    TOP optional) and LIST gives a size up to :data:`_MAX_HEADER_READ`."""
    answer = ask(client, b"TOP %d 0" % number, bound=_HEADER_ONLY)
    if not answer.ok and retr:
        words = ask(client, b"LIST %d" % number).status.split()
        size = wire_number(words[2]) if len(words) > 2 else None
        if size is None or size > _MAX_HEADER_READ:
            return False, None
        answer = ask(client, b"RETR %d" % number, bound=_listed_size(size))
    return (True, marker_of(answer.content())) if answer.ok else (False, None)


def _listed_size(size: int) -> ResponseBound:
    """What RETR of a message LIST gives ``size`` octets may bring: each line at most
    doubled (a stuffing dot, a CR before a bare LF) and a CRLF after a last line that
    had none (RFC 1939 §3)."""
    return ResponseBound(2 * size + 2, f"over twice the {size} octets LIST gives (RFC 1939 §5)")


def _whole(message: DeliveredMessage) -> ResponseBound:
    """What RETR, or TOP of every body line, of test message ``message`` may bring: a
    header section within :data:`MAX_HEADER_SECTION` (the MTA's fields, then those
    sent) and the body sent, its lines at most doubled (see :func:`_listed_size`)."""
    return ResponseBound(
        MAX_HEADER_SECTION + 2 * len(message.body) + 2,
        f"more than a header section and twice the {len(message.body)}-octet body sent",
    )


def _snapshot(probe: POP3Probe) -> _Mailbox:
    """The mailbox before the delivery: its unique-ids and their messages' sizes, which
    no look reads again while both are the same (:func:`_listed_before`)."""
    client = probe.session()
    uids = _unique_ids(client, probe.line_said) or {}
    sizes = _scan(client, probe.line_said) if uids else {}
    probe.end(client)
    return _Mailbox({uid: sizes.get(number) for number, uid in uids.items()})


def _await_delivery(
    probe: POP3Probe, mailbox: _Mailbox, wanted: set[bytes], wait: float
) -> tuple[POP3Wire, dict[bytes, int]]:
    """A session in which every wanted marker is found, or the last one, once the
    sleeps of :func:`poll_sleeps` have covered ``wait`` seconds; with the markers found
    in it. The numbers are that session's, and so is every marker read without UIDL."""
    sleeps = poll_sleeps(wait)
    while True:
        client = probe.session()
        found = mailbox.find(client, wanted, probe.line_said)
        sleep = None if set(found) == wanted else next(sleeps, None)
        if sleep is None:
            return client, found
        probe.end(client)
        time.sleep(sleep)


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
    reads = [(b"RETR %d" % number, message.body, whole), (b"TOP %d 0" % number, b"", _HEADER_ONLY)]
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
    client, found = _await_delivery(probe, mailbox, wanted, delivery.wait)
    delivery.uids.update(mailbox.uids)
    delivery.uidl = mailbox.by_uid
    delivery.before = mailbox.before
    probe.problems.extend(_reused_before(probe, messages, mailbox.reused))
    missing = [m.name for m in messages if m.marker not in found]
    if missing:
        probe.end(client)
        raise Failed(
            f"{len(missing)} of {len(messages)} test messages ({', '.join(missing)}) were not "
            f"in the mailbox {delivery.wait:g} s after the SMTP server took them"
        )
    for message in messages:
        problems = _message_problems(client, found[message.marker], message)
        if problems:
            raise Failed("; ".join(problems))
    probe.end(client)
    return _summary(client, messages)


def _reused_before(
    probe: POP3Probe, messages: list[DeliveredMessage], reused: dict[bytes, bytes]
) -> list[str]:
    """A problem for each test message the poll found under a unique-id another message
    had before the delivery: an id names one message, persists, and is never
    reused (RFC 1939 §7)."""
    return [
        f"UIDL lists test message {message.name} under {probe.line_said(reused[message.marker])}, "
        "the unique-id of another message before the delivery (RFC 1939 §7: a unique-id "
        "names one message, and a server never gives it to another)"
        for message in messages
        if message.marker in reused
    ]


def _summary(client: POP3Wire, messages: list[DeliveredMessage]) -> str:
    names = [message.name for message in messages]
    if "eight-bit" not in names:
        unjudged(client, "the SMTP server offers no 8BITMIME, so no 8-bit message was sent")
    return f"{len(messages)} messages delivered over SMTP came back intact ({', '.join(names)})"


def delete_delivered(probe: POP3Probe, delivery: Delivery) -> str:
    """DELE the battery's own test messages, then QUIT to have them deleted (RFC 1939
    §6); returns the note that says how many were deleted, and how to find the rest.

    A candidate is a message the poll found by UIDL; in this session its ``TOP n 0``
    must show the marker the poll found under its unique-id: a unique-id names one
    message across sessions (§7), but a server whose ids are the message numbers, or
    change by session, names another once mail came or went, and a TOP that serves a
    stale header shows another test message's marker. The session sends UIDL, those
    TOPs and DELEs, and QUIT only where every TOP read showed its own message; a
    listing that gives two messages one id, or a TOP that shows any other message,
    deletes nothing at all: the session ends without QUIT. Neither QUIT's
    ``+OK`` nor its ``-ERR`` (some or none of the marked messages removed, §6) says
    which were removed: a new session looks (:func:`_confirmed`)."""
    if not delivery.uids:
        return _deletion_note(delivery, 0, _why_none_found(delivery))
    try:
        client = probe.session()
    except LoginRefused as exc:  # the same login worked for the checks: no advice
        raise Failed(exc.refusal) from None
    identities, by_uid = _identities(client, probe.line_said)
    if not by_uid or _repeats_an_id(identities):
        why = "UIDL gives one unique-id to two messages" if by_uid else "UIDL is refused now"
        return _none_deleted(probe, client, delivery, why)
    own = {uid: marker for marker, uid in delivery.uids.items()}
    candidates = {number: uid for number, uid in identities.items() if uid in own}
    # No RETR: a server may delete what was retrieved at QUIT.
    shown = _markers_at(client, candidates, retr=False)
    if any(marker != own[candidates[number]] for number, marker in shown.items()):
        why = "a unique-id now names another message (RFC 1939 §7)"
        return _none_deleted(probe, client, delivery, why)
    marked = {own[candidates[n]] for n in shown if ask(client, b"DELE %d" % n).ok}
    if not marked:
        return _none_deleted(probe, client, delivery, "not found")
    delivery.marked_before_quit = len(marked)
    quit = probe.line_said(probe.quit_after_own_deletions(client))
    return _confirmed(
        probe, delivery, marked, f"{_were(len(marked))} marked with DELE and QUIT got {quit}"
    )


def _confirmed(probe: POP3Probe, delivery: Delivery, marked: set[bytes], after: str) -> str:
    """The note once QUIT followed the DELE of the test messages ``marked`` (their
    markers), ``after`` saying so: a QUIT answered ``+OK`` may have removed nothing,
    and one answered ``-ERR`` some or all (RFC 1939 §6), so a new session looks for
    the markers (:func:`_still_found`), and the note counts as deleted only those it
    no longer finds. What that session cannot tell, or a failure of it, leaves the
    count unknown, never deleted. Where that session finds a unique-id given to
    another message than the one it named, the note says so last."""
    try:
        look = _still_found(probe, delivery, marked)
    except LoginRefused as exc:  # the login worked for the deletes: no advice
        look = _Look(0, f"a new session to confirm it failed: {exc.refusal}")
    except SESSION_ENDINGS as exc:
        look = _Look(0, f"a new session to confirm it failed: {ending_said(exc, probe.timeout)}")
    if look.unknown:
        note = _deletion_note(delivery, 0, f"{after}, but {look.unknown}", known=False)
        return note + _reused_said(look.reused)
    why = "not found"
    if look.still:
        them = "it" if len(marked) == 1 else f"{look.still} of them"
        why = f"{after}, and a new session still finds {them}"
        if len(delivery.messages) > len(marked):
            why = f"{len(delivery.messages) - len(marked)} not found; {why}"
    return _deletion_note(delivery, len(marked) - look.still, why) + _reused_said(look.reused)


class _Look(NamedTuple):
    """What the session that confirms a deletion found (:func:`_still_found`)."""

    still: int
    """How many of the marked test messages it still finds."""
    unknown: str | None = None
    """What keeps that count from being known, or None."""
    reused: tuple[str, ...] = ()
    """Each unique-id it lists for another message than the one it named, said."""


def _still_found(probe: POP3Probe, delivery: Delivery, marked: set[bytes]) -> _Look:
    """How many of the markers ``marked`` a new session still finds, reading ``TOP n
    0`` (or RETR) of every message listed that was not there before the delivery
    (:func:`_listed_before`: a unique-id of :attr:`~Delivery.before` at its size);
    what keeps that from being known, if anything; and the unique-ids it finds given
    to another message (:func:`_reused_ids`). Every message LIST gives is looked at,
    with or without a unique-id: ids may be message numbers, which shift once one is
    removed, be renamed by the UPDATE, or be left out of UIDL, so a missing id says
    nothing; a marker found does. A message whose header cannot be read, or a UIDL
    that gives two messages one id, leaves the count unknown."""
    client = probe.session()
    uids = _unique_ids(client, probe.line_said) or {}
    sizes = _scan(client, probe.line_said)
    identities = {number: uids.get(number) for number in sizes}
    if _repeats_an_id(identities):
        probe.end(client)
        return _Look(0, "a new session's UIDL gives one unique-id to two messages")
    numbers = [
        n for n, uid in identities.items() if not _listed_before(delivery.before, uid, sizes[n])
    ]
    markers = _markers_at(client, numbers, retr=True)
    probe.end(client)
    reused = _reused_ids(probe, delivery, identities, markers)
    unread = len(numbers) - len(markers)
    if unread:
        messages = "1 message" if unread == 1 else f"{unread} messages"
        why = f"a new session could not read the header of {messages} (TOP and RETR refused)"
        return _Look(0, why, reused)
    return _Look(len(marked.intersection(markers.values())), None, reused)


def _reused_ids(
    probe: POP3Probe, delivery: Delivery, identities: Identities, markers: dict[int, bytes | None]
) -> tuple[str, ...]:
    """Each unique-id of ``identities`` that names, by the marker read (``markers``),
    another message than it named before: one the mailbox had before the delivery,
    now on a test message, or one the poll found on a test message, now on another
    message. RFC 1939 §7: an id names one message, persists across sessions, and is
    never given to another; a server that numbers its ids by position gives a
    removed message's id to the next."""
    names = {message.marker: message.name for message in delivery.messages}
    polled = {uid: marker for marker, uid in delivery.uids.items()}
    reused = []
    for number, marker in markers.items():
        uid = identities[number]
        shows = f"test message {names[marker]}" if marker in names else "no test message"
        if uid in delivery.before and marker in names:
            named = "another message before the delivery"
        elif uid in polled and marker != polled[uid]:
            named = f"test message {names[polled[uid]]} when it was found"
        else:
            continue
        assert uid is not None  # in before or polled
        reused.append(f"{probe.line_said(uid)} names {shows}, where it named {named}")
    return tuple(reused)


def _reused_said(reused: tuple[str, ...]) -> str:
    """What the note adds where the confirming session found unique-ids reused: the
    first few, and how many more."""
    if not reused:
        return ""
    shown = list(reused[:_SHOWN_REUSED])
    if len(reused) > _SHOWN_REUSED:
        shown.append(f"{len(reused) - _SHOWN_REUSED} more")
    return (
        "; and the new session's UIDL gives a message a unique-id another had (RFC 1939 §7: "
        f"an id names one message, and is never given to another): {'; '.join(shown)}"
    )


def _none_deleted(probe: POP3Probe, client: POP3Wire, delivery: Delivery, why: str) -> str:
    """End a delete session that marked nothing, and say why none was deleted; where
    ending it fails, the failure keeps that reason: its QUIT, if sent, deleted nothing
    (RFC 1939 §6)."""
    try:
        probe.end(client)
    except Failed as exc:
        raise Failed(f"{why}, and then {exc}") from None
    return _deletion_note(delivery, 0, why)


def _why_none_found(delivery: Delivery) -> str:
    """Why no delivered message has a unique-id to delete by: the poll never ran (the
    delivery failed before it), UIDL was refused (RFC 1939 §7 makes it optional), or
    the poll did not find them."""
    if delivery.uidl is None:
        return "not looked for: the delivery failed"
    return "UIDL is refused" if delivery.uidl is False else "not found"


def failed_deletion_note(delivery: Delivery, failure: str) -> str:
    """The note of a delete session that failed (``failure`` its summary): none deleted
    that the battery knows of, how to find them, and, where its QUIT followed DELEs
    answered ``+OK`` (:attr:`~Delivery.marked_before_quit`), that the server may have
    deleted those (RFC 1939 §6: the UPDATE state). A QUIT after no DELE deletes none."""
    marked = delivery.marked_before_quit
    why = f"the delete session failed: {failure}"
    if marked:
        why += f"; its QUIT was sent after {_were(marked)} marked with DELE, which may be deleted"
    return _deletion_note(delivery, 0, why, known=not marked)


def _deletion_note(delivery: Delivery, deleted: int, why_left: str, *, known: bool = True) -> str:
    """How many of every message delivered were deleted (``known``: for certain); where
    some were left, why, and the header line that finds them."""
    total = len(delivery.messages)
    left = total - deleted
    them = "it by its" if left == 1 else "them by their"
    find = f"find {them} header '{MARKER_FIELD.decode()}: {delivery.run}.*'"
    if deleted:
        them = "it" if deleted == 1 else "them"
        note = (
            f"{deleted} of {total} delivered test {_messages(total)} {_was(deleted)} deleted "
            f"(DELE, then QUIT, and a new session finds {them} no more)"
        )
    elif total == 1:
        note = "the delivered test message " + (
            "was not deleted" if known else "is not known to have been deleted"
        )
    elif known:
        note = f"none of the {total} delivered test messages was deleted"
    else:
        note = f"none of the {total} delivered test messages is known to have been deleted"
    where = "left in the mailbox" if known else "may be left in the mailbox"
    return note + (f"; {left} {where} ({why_left}): {find}" if left else "")


def _messages(count: int) -> str:
    return "message" if count == 1 else "messages"


def _was(count: int) -> str:
    return "was" if count == 1 else "were"


def _were(count: int) -> str:
    """``count`` and its verb: "1 was", "4 were"."""
    return f"{count} {_was(count)}"
