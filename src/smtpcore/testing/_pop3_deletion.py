"""Deleting the battery's own test messages, asked for explicitly, and confirming it.

:func:`delete_delivered` marks with DELE only the messages whose header, read in
that very session, shows the marker the poll of ``delivered-intact`` found under
their unique-id, and QUITs; a new session then looks for the markers
(:func:`_still_found`), for neither ``+OK`` nor ``-ERR`` to QUIT says which were
removed (RFC 1939 §6). The note counts as deleted only what that session no
longer finds. Without a deletion, :func:`left_in_mailbox` looks the same way, and
its note counts as left only what it finds.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from smtpcore.testing._battery import SESSION_ENDINGS, Failed, ending_said
from smtpcore.testing._delivery import MARKER_FIELD, Delivery
from smtpcore.testing._pop3_mailbox import (
    Header,
    HeaderReader,
    Listed,
    Listing,
    id_named_another,
    listed_before,
    look,
    mailbox_listing,
    markers_at,
    new_marker_at,
    own_marker_at,
    repeats_an_id,
)
from smtpcore.testing._pop3_probe import LoginRefused, POP3Probe
from smtpcore.testing._pop3_responses import ask
from smtpcore.testing._pop3_wire import POP3Wire
from smtpcore.testing._wire import Exchange

__all__ = ["delete_delivered", "dropped_deletion", "failed_deletion_note", "left_in_mailbox"]

_SHOWN_REUSED: Final = 3
"""At most this many reused unique-ids are named in a note; the rest are counted."""


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
    listing, by_uid = mailbox_listing(client, probe.line_said)
    if not by_uid or repeats_an_id(listing):
        why = "UIDL gives one unique-id to two messages" if by_uid else "UIDL is refused now"
        return _none_deleted(probe, client, delivery, why)
    own = {uid: marker for marker, uid in delivery.uids.items()}
    candidates = {n: listed for n, listed in listing.items() if listed.uid in own}
    shown = markers_at(client, candidates, _header_reader(delivery))
    if shown.overran or any(
        marker != own.get(candidates[n].uid or b"") for n, marker in shown.markers.items()
    ):
        why = "a unique-id now names another message (RFC 1939 §7)"
        return _none_deleted(probe, client, delivery, why)
    marked = {
        own[uid]
        for n in shown.markers
        if (uid := candidates[n].uid) is not None and ask(client, b"DELE %d" % n).ok
    }
    if not marked:
        return _none_deleted(probe, client, delivery, "not found")
    delivery.marked_before_quit = len(marked)
    quit = probe.line_said(probe.quit_after_own_deletions(client))
    return _confirmed(
        probe, delivery, marked, f"{_were(len(marked))} marked with DELE and QUIT got {quit}"
    )


def dropped_deletion(probe: POP3Probe, delivery: Delivery) -> tuple[str | None, str]:
    """DELE one of the battery's own test messages, then drop the connection with
    neither RSET nor QUIT: a session that ends without QUIT never enters the UPDATE
    state, so nothing it marked is deleted (RFC 1939 §6), and a new session must find
    the message again (:func:`_still_found`). The battery's own message, for a server
    that commits on a dropped connection deletes it: the user's mail is never put at
    risk. Returns the problem found, or None, and what to say of the step (why it was
    not tried, where it could not be). The message is found as
    :func:`delete_delivered` finds one: by its unique-id, its marker read in this very
    session."""
    if not delivery.uids:
        return None, "untested: no test message was found by its unique-id"
    client = probe.session()
    listing, by_uid = mailbox_listing(client, probe.line_said)
    own = {uid: marker for marker, uid in delivery.uids.items()}
    candidates = {n: listed for n, listed in listing.items() if listed.uid in own}
    if not by_uid or not candidates or repeats_an_id(listing):
        probe.end(client)
        return None, "untested: no test message was listed under its unique-id"
    number = min(candidates)
    marker = own[candidates[number].uid or b""]
    shown = markers_at(client, {number: candidates[number]}, _header_reader(delivery))
    if shown.overran or shown.markers.get(number) != marker:
        probe.end(client)
        return None, "untested: the test message's unique-id now names another message"
    if not ask(client, b"DELE %d" % number).ok:
        probe.end(client)
        return None, "untested: DELE of a test message was refused"
    # Dropped: the FIN, then the server's own close (within the timeout), so that the
    # new session looks only once the server is done with this one.
    client.transcript.append(Exchange("note", note="dropped without RSET or QUIT"))
    client.shutdown_write()
    client.read_lines_until_closed()
    client.close()
    client.closed = True
    look = _still_found(probe, delivery, {marker})
    if look.unknown:
        return None, f"untested: {look.unknown}"
    if not look.still:
        return (
            f"a test message marked with DELE (message {number}), the connection then "
            "dropped without RSET or QUIT, was gone in a new session: a session that "
            "ends without QUIT deletes nothing (RFC 1939 §6)"
        ), ""
    return None, "a test message marked with DELE, the connection dropped, was listed again"


def _header_reader(delivery: Delivery) -> HeaderReader:
    """How a deletion's sessions read a message's header: strictly
    (:func:`~smtpcore.testing._pop3_mailbox.own_marker_at`) where it is listed under a
    test message's unique-id at the size the poll found it with, the rule of
    :func:`~smtpcore.testing._pop3_mailbox.listed_before`; else leniently, as a
    message that may be the user's (:func:`~smtpcore.testing._pop3_mailbox.new_marker_at`)."""
    known = {(uid, delivery.sizes.get(marker)) for marker, uid in delivery.uids.items()}

    def read(client: POP3Wire, number: int, listed: Listed) -> Header:
        if (listed.uid, listed.size) in known:
            return own_marker_at(client, number, listed)
        return new_marker_at(client, number, listed)

    return read


def _confirmed(probe: POP3Probe, delivery: Delivery, marked: set[bytes], after: str) -> str:
    """The note once QUIT followed the DELE of the test messages ``marked`` (their
    markers), ``after`` saying so: a QUIT answered ``+OK`` may have removed nothing,
    and one answered ``-ERR`` some or all (RFC 1939 §6), so a new session looks for
    the markers (:func:`_still_found`), and the note counts as deleted only those it
    no longer finds. What that session cannot tell, or a failure of it, leaves the
    count unknown, never deleted. Where that session finds a unique-id given to
    another message than the one it named, the note says so last."""
    look = _look_again(probe, delivery, marked, "to confirm it")
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


def left_in_mailbox(probe: POP3Probe, delivery: Delivery) -> str:
    """The note of test messages left in the mailbox, none deleted: how many a new
    session finds (:func:`_still_found`, as after a deletion), not how many SMTP took,
    for ``delivered-intact`` may not have found them all (an MTA that stores them past
    the wait: they may still arrive) and ``deletion`` may have removed one (a server
    that commits a dropped session's DELE). Where the delivery failed before the poll
    listed the mailbox, nothing tells the user's mail from the test messages: none is
    looked for, and ``--delete-delivered`` would delete none. Every note ends with
    the header that finds them (:func:`_left_said`, as the deletion notes do)."""
    total = len(delivery.messages)
    delivered = f"{total} delivered test {_messages(total)}"
    if delivery.uidl is None:
        return f"{delivered} " + _left_said(
            delivery, total, _why_none_found(delivery), known=False
        )
    ours = {message.marker for message in delivery.messages}
    look = _look_again(probe, delivery, ours, "to look for them")
    if look.unknown:
        note = _left_said(delivery, total, look.unknown, known=False, deletable=True)
        return f"{delivered} {note}" + _reused_said(look.reused)
    missing = total - look.still
    why = "a new session finds " + (
        "it" if total == 1 else "them all" if not missing else str(look.still or "none")
    )
    if missing:
        late = " and may still arrive" if delivery.found < total else ""
        why += f"; {_were(missing)} not found{late}"
    if look.still:
        count = delivered if look.still == total else f"{look.still} of {delivered}"
        note = f"{_was(look.still)} " + _left_said(delivery, look.still, why, deletable=True)
    else:
        count = (
            "the delivered test message is not" if total == 1 else f"none of the {delivered} is"
        )
        note = f"in the mailbox ({why}): {_find(delivery, total)}"
    return f"{count} {note}" + _reused_said(look.reused)


def _look_again(probe: POP3Probe, delivery: Delivery, marked: set[bytes], why: str) -> _Look:
    """:func:`_still_found` in a new session opened ``why``, whose failure (a refused
    login, a timeout, a bad response) leaves the count unknown and says so."""
    try:
        return _still_found(probe, delivery, marked)
    except LoginRefused as exc:  # the login worked for the checks: no advice
        return _Look(0, f"a new session {why} failed: {exc.refusal}")
    except SESSION_ENDINGS as exc:
        return _Look(0, f"a new session {why} failed: {ending_said(exc, probe.timeout)}")


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
    (:func:`~smtpcore.testing._pop3_mailbox.listed_before`: a unique-id of
    :attr:`~Delivery.before` at its size), within what LIST gives each
    (:func:`~smtpcore.testing._pop3_mailbox.new_marker_at`); what keeps that from
    being known, if anything; and the unique-ids it finds given to another message
    (:func:`_reused_ids`). Every message LIST gives is looked at, with or without a
    unique-id: ids may be message numbers, which shift once one is removed, be
    renamed by the UPDATE, or be left out of UIDL, so a missing id says nothing; a
    marker found does. A message whose header cannot be read (TOP and RETR
    refused, or a response past twice LIST's size), or a UIDL that gives two
    messages one id, leaves the count unknown."""
    found = look(
        probe, lambda listed: not listed_before(delivery.before, listed), _header_reader(delivery)
    )
    probe.end(found.client)
    if repeats_an_id(found.listing):
        return _Look(0, "a new session's UIDL gives one unique-id to two messages")
    reused = _reused_ids(probe, delivery, found.listing, found.markers)
    wanted = [
        n for n, listed in found.listing.items() if not listed_before(delivery.before, listed)
    ]
    unread = len(wanted) - len(found.markers)
    if unread:
        messages = "1 message" if unread == 1 else f"{unread} messages"
        why = _unread_why(unread, found.overran)
        why = f"a new session could not read the header of {messages} ({why})"
        return _Look(0, why, reused)
    return _Look(len(marked.intersection(found.markers.values())), None, reused)


def _unread_why(unread: int, overran: int) -> str:
    """Why ``unread`` headers could not be read, ``overran`` of them for their
    response ran past LIST's size (:func:`~smtpcore.testing._pop3_mailbox.look`)."""
    overrun = "ran over twice the size LIST gives and 4 octets"
    if not overran:
        return "TOP and RETR refused"
    if overran == unread:
        return f"the response to TOP n 0 (or RETR) {overrun}"
    return f"{unread - overran} refused TOP and RETR, and {overran} {overrun}"


def _reused_ids(
    probe: POP3Probe, delivery: Delivery, listing: Listing, markers: dict[int, bytes | None]
) -> tuple[str, ...]:
    """Each unique-id of ``listing`` that names, by the marker read (``markers``),
    another message than it named before: one the mailbox had before the delivery,
    now on a test message, or one the poll found on a test message, now on another
    message. RFC 1939 §7: an id names one message, persists across sessions, and is
    never given to another; a server that numbers its ids by position gives a
    removed message's id to the next."""
    names = {message.marker: message.name for message in delivery.messages}
    named: dict[bytes, bytes | None] = {uid: marker for marker, uid in delivery.uids.items()}
    named.update(dict.fromkeys(delivery.before))
    reused = []
    for number, marker in markers.items():
        uid = listing[number].uid
        if uid is None or not id_named_another(uid, marker, named, names):
            continue
        shows = f"test message {names[marker]}" if marker in names else "no test message"
        was = named[uid]
        then = (
            "another message before the delivery"
            if was is None
            else f"test message {names[was]} when it was found"
        )
        reused.append(f"{probe.line_said(uid)} names {shows}, where it named {then}")
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
    return note + (f"; {left} {_left_said(delivery, left, why_left, known=known)}" if left else "")


def _left_said(
    delivery: Delivery, left: int, why: str, *, known: bool = True, deletable: bool = False
) -> str:
    """Where ``left`` test messages are and ``why``, and how to find them: the one
    wording of every note of messages left, deleted or not; ``deletable`` where
    ``--delete-delivered`` could delete them (the poll found them by their unique-id)."""
    where = "left in the mailbox" if known else "may be left in the mailbox"
    find = _find(delivery, left)
    if deletable and delivery.uids:
        them = "it" if left == 1 else "them"
        find = f"pass delete_delivered (--delete-delivered) to delete {them}, or {find}"
    return f"{where} ({why}): {find}"


def _find(delivery: Delivery, count: int) -> str:
    """How to find ``count`` test messages: by the header line their marker is on."""
    them = "it by its" if count == 1 else "them by their"
    return f"find {them} header '{MARKER_FIELD.decode()}: {delivery.run}.*'"


def _messages(count: int) -> str:
    return "message" if count == 1 else "messages"


def _was(count: int) -> str:
    return "was" if count == 1 else "were"


def _were(count: int) -> str:
    """``count`` and its verb: "1 was", "4 were"."""
    return f"{count} {_was(count)}"
