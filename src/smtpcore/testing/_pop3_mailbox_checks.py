"""The POP3 checks of which message is which: ``deletion`` and ``uidl``.

A client that keeps mail on the server relies on both: a message marked with
DELE is gone for the session and back after RSET (RFC 1939 §5), and a
unique-id is well formed, unique, and the same in the next session (§7).
Neither deletes anything: see :mod:`smtpcore.testing.check_pop3`.
"""

from __future__ import annotations

from smtpcore import pop3
from smtpcore._errors import RemoteProtocolError
from smtpcore.testing._battery import Failed, Skipped, unjudged
from smtpcore.testing._pop3_deletion import dropped_deletion
from smtpcore.testing._pop3_probe import POP3Probe, mail_needed
from smtpcore.testing._pop3_responses import ask
from smtpcore.testing._wire import WireClient

__all__ = ["check_deletion", "check_uidl"]


# -- deletion ------------------------------------------------------------------------------


def _stat(client: WireClient) -> tuple[int, int]:
    answer = ask(client, b"STAT")
    words = answer.status.split()
    if not answer.ok or len(words) < 3 or not all(w.isdigit() for w in words[1:3]):
        raise Failed(f"STAT got {answer}, not '+OK count size' (RFC 1939 §5)")
    return int(words[1]), int(words[2])


def check_deletion(probe: POP3Probe) -> str:
    """A message marked deleted is gone for the session, and RSET brings it back (RFC 1939 §5).

    DELE of the first message, then RETR, LIST, TOP, UIDL and DELE of it get
    ``-ERR`` (§5, §7: a message marked as deleted may not be referred to, UIDL
    included), STAT and LIST leave it out; RSET unmarks it. A server that
    serves, counts or deletes twice a marked message, or whose RSET misses
    one, loses or duplicates mail in every client that deletes as it goes.

    What a QUIT would delete is not tested, and cannot be without risking the
    message: a server whose RSET clears the listing's marks but not its own
    list of what to delete, or whose LIST ignores marks, would lose it. The
    session ends without QUIT (:meth:`~POP3Probe.end`), and a new session
    must list every message: closing without QUIT deletes nothing (RFC 1939 §6).
    That session sent RSET first; with a delivery, a session that drops the
    connection with one of the battery's own messages still marked follows
    (:func:`~smtpcore.testing._pop3_deletion.dropped_deletion`).
    """
    client = probe.session()
    before = probe.listing(client)
    mail_needed(before)
    count, octets = _stat(client)
    number = min(before)
    marked = ask(client, b"DELE %d" % number)
    if not marked.ok:
        probe.restore(client, before)
        raise Skipped(f"DELE {number} was refused ({marked}): the mailbox may be read-only")
    problems = probe.problems  # a session refused after a problem found keeps it
    for line in (b"RETR %d", b"LIST %d", b"TOP %d 0", b"UIDL %d", b"DELE %d"):
        answer = ask(client, line % number)
        if not answer.err:
            problems.append(f"{(line % number).decode()} after DELE got {answer}, not -ERR")
    if _stat(client) != (count - 1, octets - before[number]):
        problems.append(
            f"STAT after DELE does not leave out message {number}'s {before[number]} octets"
        )
    left = probe.listing(client)
    if number in left:
        problems.append(f"LIST after DELE still lists message {number}")
    probe.restore(client, before)
    if _stat(client) != (count, octets):
        problems.append("STAT after RSET does not count every message again")
    probe.end(client)
    client = probe.session()
    again = probe.listing(client)
    probe.end(client)
    if again != before:
        problems.append(
            f"a new session lists {again}, not {before}: a session closed without QUIT "
            "deleted mail (RFC 1939 §6)"
        )
    dropped = ""
    if probe.delivery is not None:
        problem, dropped = dropped_deletion(probe, probe.delivery)
        if problem:
            problems.append(problem)
    if problems:
        raise Failed("; ".join(problems))
    return (
        f"message {number} was gone after DELE and back after RSET; closed without QUIT, "
        "nothing was deleted" + (f"; {dropped}" if dropped else "")
    )


# -- uidl ----------------------------------------------------------------------------------


def _unique_ids(client: WireClient, probe: POP3Probe) -> dict[int, bytes]:
    """The UIDL listing, checked: ids of 1 to 70 octets 0x21-0x7E, one per listed
    message, unique, each as ``UIDL n`` gives it (RFC 1939 §7)."""
    answer = ask(client, b"UIDL")
    if not answer.ok:
        raise Failed(f"UIDL got {answer}, though CAPA offers it")
    for line in answer.lines:
        words = line.rstrip(b"\r\n").split(b" ")
        try:
            pairs = pop3.parse_uid_listing(line)
        except RemoteProtocolError:
            pairs = []
        if len(words) != 2 or len(pairs) != 1:
            raise Failed(
                f"UIDL gave the line {line!r}, not 'number id': a message numbered 1 to "
                f"{pop3.MAX_MESSAGE_NUMBER}, an id of 1 to 70 octets of 0x21-0x7E (RFC 1939 §7)"
            )
    try:
        listed = pop3.parse_uid_listing(answer.content())
    except RemoteProtocolError as exc:  # the lines are good: a number or an id twice
        raise Failed(f"UIDL gave {exc} (RFC 1939 §7)") from None
    ids = {number: uid.encode("ascii") for number, uid in listed}
    listing = probe.listing(client)
    if set(ids) != set(listing):
        raise Failed(f"UIDL lists messages {sorted(ids)}, LIST {sorted(listing)}")
    for number, uid in ids.items():
        single = ask(client, b"UIDL %d" % number)
        if single.status.split()[1:3] != [str(number).encode(), uid]:
            raise Failed(f"UIDL {number} got {single}, where the listing says {uid!r}")
    return ids


def check_uidl(probe: POP3Probe) -> str:
    """Unique-ids are well formed, unique and the same in the next session (RFC 1939 §7).

    A client that keeps mail on the server fetches again, or deletes the wrong
    message, when a server gives an id with a space or over 70 octets, gives
    two messages one id, or numbers its ids by connection.

    Ids that are the message numbers are stable here, and are wrong only once a
    message is deleted and the others renumbered (§7: an id persists across
    sessions); the check deletes nothing, so it cannot tell, and the
    transcript says the persistence was not judged.
    """
    client = probe.session()
    offered = probe.capabilities(client)
    if offered is not None and "UIDL" not in offered:
        raise Skipped("UIDL is not offered in CAPA")
    first = _unique_ids(client, probe)
    mail_needed(first)
    probe.end(client)
    client = probe.session()
    second = _unique_ids(client, probe)
    probe.end(client)
    if second != first:
        raise Failed(f"the unique-ids changed between sessions: {first} then {second}")
    if all(uid == b"%d" % number for number, uid in first.items()):
        unjudged(
            client,
            "the unique-ids are the message numbers: whether they outlive a deletion "
            "(RFC 1939 §7) is not tested, since the check deletes nothing",
        )
    return f"{len(first)} unique-ids, well formed, unique and stable"
