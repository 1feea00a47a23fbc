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
from collections.abc import Iterator
from typing import Final

from smtpcore.testing._battery import Failed, Skipped, unjudged
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
    POP3Wire,
    StalledResponse,
    ask,
    lines_of,
    wire_number,
)

__all__ = [
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
_MAX_HEADER_READ: Final = 1 << 20
"""A new message larger than this (by LIST) is not read to look for a marker."""
_SHOWN: Final = 80

Identities = dict[int, bytes]
"""Message number to what names it: its unique-id (RFC 1939 §7), or, where UIDL is
refused, its number, which names the message in this session only (§5)."""


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


def _identities(client: POP3Wire) -> tuple[Identities, bool]:
    """The mailbox's messages by identity, and whether the identities are unique-ids:
    UIDL where the server takes it, else LIST. Numbers are ASCII digits, bounded
    (:func:`~smtpcore.testing._pop3_probe.wire_number`)."""
    answer = ask(client, b"UIDL")
    by_uid = answer.ok
    if not by_uid:
        answer = ask(client, b"LIST")
        if not answer.ok:
            raise Failed(f"LIST was answered {answer} in the TRANSACTION state (RFC 1939 §5)")
    ids: Identities = {}
    for line in answer.lines:
        words = line.rstrip(b"\r\n").split(b" ")
        number = wire_number(words[0])
        if len(words) < 2 or number is None:
            raise Failed(
                f"a scan or unique-id listing gave the line {line[:_SHOWN]!r}"
                f"{' ...' if len(line) > _SHOWN else ''} (RFC 1939 §5, §7)"
            )
        ids[number] = words[1] if by_uid else words[0]
    return ids, by_uid


class _Mailbox:
    """What the poll learnt: the identities there before the delivery, the marker (or
    None) of each new message by unique-id, so that none is read twice, and each
    marker's unique-id, for :func:`delete_delivered`. Without UIDL nothing is kept
    across sessions: a number names another message once one is deleted (RFC 1939
    §5), so each session reads the markers again."""

    def __init__(self, before: set[bytes], by_uid: bool) -> None:
        self.before = before if by_uid else set()
        self.by_uid = by_uid
        self.markers: dict[bytes, bytes | None] = {}
        self.uids: dict[bytes, bytes] = {}

    def find(self, client: POP3Wire, wanted: set[bytes]) -> dict[bytes, int]:
        """The wanted markers found in this session, each with its message number."""
        found: dict[bytes, int] = {}
        identities, self.by_uid = _identities(client)
        for number, identity in identities.items():
            if self.by_uid and identity in self.before:
                continue
            marker = self._marker(client, number, identity)
            if marker is not None and marker in wanted:
                found[marker] = number
                if self.by_uid:
                    self.uids[marker] = identity
        return found

    def _marker(self, client: POP3Wire, number: int, identity: bytes) -> bytes | None:
        if not self.by_uid:
            return _marker_at(client, number)
        if identity not in self.markers:
            self.markers[identity] = _marker_at(client, number)
        return self.markers[identity]


def _marker_at(client: POP3Wire, number: int, *, retr: bool = True) -> bytes | None:
    """The marker of message ``number``: read with ``TOP n 0``, or, if ``retr``, with
    RETR where TOP is refused (RFC 1939 §7 makes TOP optional)."""
    answer = ask(client, b"TOP %d 0" % number)
    if not answer.ok and retr:
        words = ask(client, b"LIST %d" % number).status.split()
        size = wire_number(words[2]) if len(words) > 2 else None
        if size is None or size > _MAX_HEADER_READ:
            return None
        answer = ask(client, b"RETR %d" % number)
    return marker_of(answer.content()) if answer.ok else None


def _snapshot(probe: POP3Probe) -> _Mailbox:
    client = probe.session()
    identities, by_uid = _identities(client)
    probe.end(client)
    return _Mailbox(set(identities.values()), by_uid)


def _await_delivery(
    probe: POP3Probe, mailbox: _Mailbox, wanted: set[bytes], wait: float
) -> tuple[POP3Wire, dict[bytes, int]]:
    """A session in which every wanted marker is found, or the last one, once the
    sleeps of :func:`poll_sleeps` have covered ``wait`` seconds; with the markers found
    in it. The numbers are that session's, and so is every marker read without UIDL."""
    sleeps = poll_sleeps(wait)
    while True:
        client = probe.session()
        found = mailbox.find(client, wanted)
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
    reads = [(b"RETR %d" % number, message.body)]
    reads += [(b"TOP %d 0" % number, b""), (b"TOP %d %d" % (number, body_lines), message.body)]
    for command, expected in reads:
        what = f"{command.decode()} ({message.name})"
        try:
            answer = ask(client, command)
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
    octet for octet, and each header line sent must be in its header. The
    messages stay in the mailbox (see :func:`delete_delivered`).
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


def _summary(client: POP3Wire, messages: list[DeliveredMessage]) -> str:
    names = [message.name for message in messages]
    if "eight-bit" not in names:
        unjudged(client, "the SMTP server offers no 8BITMIME, so no 8-bit message was sent")
    return f"{len(messages)} messages delivered over SMTP came back intact ({', '.join(names)})"


def delete_delivered(probe: POP3Probe, delivery: Delivery) -> str:
    """DELE the battery's own test messages, then QUIT to have them deleted (RFC 1939
    §6); returns the note that says how many were deleted, and how to find the rest.

    A candidate is a message the poll found by UIDL; in this session it must still
    carry, by ``TOP n 0``, the marker it was found with: a unique-id names one
    message across sessions (§7), but a server whose ids are the message numbers, or
    change by session, names another once mail came or went. The session sends UIDL,
    those TOPs and DELEs, and QUIT only where every TOP showed one of the run's own
    messages; a listing that gives two messages one id, or a TOP that shows another
    message, deletes nothing at all: the session ends without QUIT. Neither QUIT's
    ``+OK`` nor its ``-ERR`` (some or none of the marked messages removed, §6) says
    which were removed: a new session looks (:func:`_still_listed`), and the note
    counts as deleted only those it no longer finds."""
    if not delivery.uids:
        return _deletion_note(delivery, 0, _why_none_found(delivery))
    try:
        client = probe.session()
    except LoginRefused as exc:  # the same login worked for the checks: no advice
        raise Failed(exc.refusal) from None
    identities, by_uid = _identities(client)
    numbers = {uid: number for number, uid in identities.items()}
    if not by_uid or len(numbers) != len(identities):
        why = "UIDL gives one unique-id to two messages" if by_uid else "UIDL is refused now"
        return _none_deleted(probe, client, delivery, why)
    own = _own_messages(client, numbers, delivery.uids)
    if own is None:
        why = "a unique-id now names another message (RFC 1939 §7)"
        return _none_deleted(probe, client, delivery, why)
    marked = {identities[number] for number in own if ask(client, b"DELE %d" % number).ok}
    if not marked:
        return _none_deleted(probe, client, delivery, "not found")
    delivery.marked_before_quit = len(marked)
    quit = probe.line_said(probe.quit_after_own_deletions(client))
    after = f"{len(marked)} were marked with DELE and QUIT got {quit}"
    still = _still_listed(probe, delivery, marked)
    if still is None:
        why = f"{after}, but a new session's UIDL is refused, so none is known gone"
        return _deletion_note(delivery, 0, why, known=False)
    why = "not found"
    if still:
        why = f"{after}, and a new session still lists {still} of them"
        if len(delivery.messages) > len(marked):
            why = f"{len(delivery.messages) - len(marked)} not found; {why}"
    return _deletion_note(delivery, len(marked) - still, why)


def _still_listed(probe: POP3Probe, delivery: Delivery, marked: set[bytes]) -> int | None:
    """How many of the messages ``marked`` (unique-ids) with DELE before a QUIT a new
    session still finds, or None where its UIDL is refused: a QUIT answered ``+OK``
    may have removed nothing, and one answered ``-ERR`` some or all (RFC 1939 §6).
    A unique-id still listed counts where ``TOP n 0`` shows the marker it was found
    with, or is refused (nothing then says it went); one that names another message
    now (a server whose ids are message numbers, §7) does not."""
    client = probe.session()
    identities, by_uid = _identities(client)
    still = 0
    if by_uid:
        numbers = {uid: number for number, uid in identities.items()}
        for marker, uid in delivery.uids.items():
            if uid in marked and uid in numbers:
                answer = ask(client, b"TOP %d 0" % numbers[uid])
                still += not answer.ok or marker_of(answer.content()) == marker
    probe.end(client)
    return still if by_uid else None


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
        why += f"; its QUIT was sent after {marked} were marked with DELE, which may be deleted"
    return _deletion_note(delivery, 0, why, known=not marked)


def _own_messages(
    client: POP3Wire, numbers: dict[bytes, int], uids: dict[bytes, bytes]
) -> list[int] | None:
    """The numbers of the candidates whose ``TOP n 0`` shows the marker each was found
    with (a refused TOP shows nothing, and the message stays); None where one shows
    another message. No RETR: a server may delete what was retrieved at QUIT."""
    own = []
    for marker, uid in uids.items():
        number = numbers.get(uid)
        if number is None:
            continue
        answer = ask(client, b"TOP %d 0" % number)
        if not answer.ok:
            continue
        if marker_of(answer.content()) != marker:
            return None
        own.append(number)
    return own


def _deletion_note(delivery: Delivery, deleted: int, why_left: str, *, known: bool = True) -> str:
    """How many of every message delivered were deleted (``known``: for certain); where
    some were left, why, and the header line that finds them."""
    total = len(delivery.messages)
    left = total - deleted
    find = f"find them by their header '{MARKER_FIELD.decode()}: {delivery.run}.*'"
    if deleted:
        note = (
            f"{deleted} of {total} delivered test messages were deleted (DELE, then QUIT, and "
            "a new session lists them no more)"
        )
    elif known:
        note = f"none of the {total} delivered test messages was deleted"
    else:
        note = f"none of the {total} delivered test messages is known to have been deleted"
    where = "left in the mailbox" if known else "may be left in the mailbox"
    return note + (f"; {left} {where} ({why_left}): {find}" if left else "")
