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
from collections.abc import Mapping
from typing import Final

from smtpcore.testing._battery import Failed, Skipped, unjudged
from smtpcore.testing._delivery import (
    MARKER_FIELD,
    DeliveredMessage,
    DeliveryFailed,
    first_difference,
    marker_of,
)
from smtpcore.testing._pop3_probe import POP3Probe, POP3Wire, ask, lines_of

__all__ = ["check_delivered_intact", "delete_delivered"]

POLL_INTERVAL: Final = 0.25
"""Seconds between two looks at the mailbox while the delivery is awaited."""
_MAX_POLLS: Final = 10_000
_MAX_HEADER_READ: Final = 1 << 20
"""A new message larger than this (by LIST) is not read to look for a marker."""

Identities = dict[int, bytes]
"""Message number to what names it across sessions: its unique-id (RFC 1939 §7), or,
where UIDL is refused, its number (stable while nothing is deleted)."""


def _identities(client: POP3Wire) -> tuple[Identities, bool]:
    """The mailbox's messages by identity, and whether the identities are unique-ids:
    UIDL where the server takes it, else LIST."""
    answer = ask(client, b"UIDL")
    by_uid = answer.ok
    if not by_uid:
        answer = ask(client, b"LIST")
        if not answer.ok:
            raise Failed(f"LIST was answered {answer} in the TRANSACTION state (RFC 1939 §5)")
    ids: Identities = {}
    for line in answer.lines:
        words = line.rstrip(b"\r\n").split(b" ")
        if len(words) < 2 or not (words[0].isascii() and words[0].isdigit()):
            raise Failed(f"a scan or unique-id listing gave the line {line!r} (RFC 1939 §5, §7)")
        ids[int(words[0])] = words[1] if by_uid else words[0]
    return ids, by_uid


class _Mailbox:
    """What the poll learnt: the identities there before the delivery, and the marker
    (or None) of each new message already read, so that no message is read twice."""

    def __init__(self, before: set[bytes]) -> None:
        self.before = before
        self.markers: dict[bytes, bytes | None] = {}
        self.uids: dict[bytes, bytes] = {}

    def find(self, client: POP3Wire, wanted: set[bytes]) -> dict[bytes, int]:
        """The wanted markers found in this session, each with its message number."""
        found: dict[bytes, int] = {}
        identities, by_uid = _identities(client)
        for number, identity in identities.items():
            if identity in self.before:
                continue
            if identity not in self.markers:
                self.markers[identity] = _marker_at(client, number)
            marker = self.markers[identity]
            if marker is not None and marker in wanted:
                found[marker] = number
                if by_uid:
                    self.uids[marker] = identity
        return found


def _marker_at(client: POP3Wire, number: int) -> bytes | None:
    """The marker of message ``number``: read with ``TOP n 0``, or RETR where TOP is
    refused (RFC 1939 §7 makes TOP optional)."""
    answer = ask(client, b"TOP %d 0" % number)
    if not answer.ok:
        size = ask(client, b"LIST %d" % number).status.split()[2:3]
        if not size or not size[0].isdigit() or int(size[0]) > _MAX_HEADER_READ:
            return None
        answer = ask(client, b"RETR %d" % number)
    return marker_of(answer.content()) if answer.ok else None


def _snapshot(probe: POP3Probe) -> _Mailbox:
    client = probe.session()
    before = set(_identities(client)[0].values())
    probe.end(client)
    return _Mailbox(before)


def _await_delivery(
    probe: POP3Probe, mailbox: _Mailbox, wanted: set[bytes], wait: float
) -> tuple[POP3Wire, dict[bytes, int]]:
    """A session in which every wanted marker is found, or the last one tried once
    ``wait`` seconds have passed; with the markers found in it."""
    deadline = time.monotonic() + wait
    for _ in range(_MAX_POLLS):
        client = probe.session()
        found = mailbox.find(client, wanted)
        if set(found) == wanted or time.monotonic() >= deadline:
            return client, found
        probe.end(client)
        time.sleep(POLL_INTERVAL)
    raise Failed(f"the delivery was polled {_MAX_POLLS} times")  # unreachable in practice


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


def _message_problems(client: POP3Wire, number: int, message: DeliveredMessage) -> list[str]:
    """What RETR, ``TOP n 0`` and TOP of every body line give wrong for ``message``
    (RFC 1939 §3: unstuffed, the lines as stored; §7: TOP gives the header, the blank
    line and that many body lines)."""
    body_lines = len(lines_of(message.body))
    reads = [(b"RETR %d" % number, message.body)]
    reads += [(b"TOP %d 0" % number, b""), (b"TOP %d %d" % (number, body_lines), message.body)]
    for command, expected in reads:
        what = f"{command.decode()} ({message.name})"
        answer = ask(client, command)
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
    without CRLF, 998-octet lines, 8-bit octets where the SMTP server offers
    8BITMIME) are submitted, awaited, and each one's body must come back
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


def delete_delivered(probe: POP3Probe, uids: Mapping[bytes, bytes]) -> str:
    """DELE the battery's own test messages, found by the unique-ids ``uids`` (by
    marker), then QUIT to have them deleted (RFC 1939 §6). The session sends UIDL,
    those DELEs and QUIT only: no other message is retrieved or marked, so even a
    server that deletes what was downloaded deletes nothing else. Without UIDL the
    messages cannot be told apart safely across sessions, and none is deleted."""
    if not uids:
        return "the delivered test messages were left in the mailbox: UIDL did not name them"
    client = probe.session()
    identities, by_uid = _identities(client)
    numbers = {uid: number for number, uid in identities.items()} if by_uid else {}
    marked = 0
    for uid in uids.values():
        if uid in numbers and ask(client, b"DELE %d" % numbers[uid]).ok:
            marked += 1
    probe.quit_after_own_deletions(client)
    return f"{marked} of {len(uids)} delivered test messages were deleted (DELE, then QUIT)"
