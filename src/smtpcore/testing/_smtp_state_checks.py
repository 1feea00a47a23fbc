"""Checks that a command runs only where the session's state allows it:
``state-order`` (RFC 5321 §3.3, §4.1.4) and ``starttls-injection`` (RFC 3207 §4.2,
CVE-2011-0411).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from smtpcore.testing._battery import Failed as _Failed
from smtpcore.testing._battery import Refused as _Refused
from smtpcore.testing._battery import Skipped as _Skipped
from smtpcore.testing._battery import insecure_context
from smtpcore.testing._smtp_probe import CLOSING, Probe, ask, quit_session, reply_codes
from smtpcore.testing._wire import ServerReply, WireClient

__all__ = ["check_starttls_injection", "check_state_order"]


@dataclass(frozen=True)
class _OutOfSequence:
    """One command sent where the session's state does not allow it (RFC 5321 §3.3).

    ``setup`` goes first, one line at a time, and each must be accepted; then
    ``line``, which must be refused: a 4xx or 5xx; ``expected`` names what the
    RFC asks for, and where. A 2xx or 3xx is the defect: a server that takes
    it runs a transaction the client never opened, or one it aborted. Where
    ``then`` is given, a 2xx to ``line`` is no defect yet: ``then`` follows, and
    it is the one that must be refused.
    """

    what: str
    setup: tuple[bytes, ...]
    line: bytes
    expected: str
    then: bytes | None = None


def _out_of_sequence(probe: Probe, offered: Mapping[str, str]) -> list[_OutOfSequence]:
    """The commands ``state-order`` sends out of sequence, each with what must come
    first: MAIL opens a transaction, RSET and a new EHLO abort it (RFC 5321
    §4.1.1.5, §4.1.4), so RCPT, DATA and BDAT must find one open. A transaction
    aborted after a recipient was taken must take that recipient with it: DATA in
    the next one, which names none, must be refused, or the message goes to a
    recipient the client took back.

    A MAIL inside a transaction is the client's mistake (§4.1.4's "MUST NOT"
    binds the client), and the server may refuse it (503) or take it: MAIL
    "tells the SMTP-receiver that a new mail transaction is starting and to
    reset all its state tables and buffers, including any recipients" (§3.3),
    as qmail-smtpd does. Taken, the old recipient is gone, so the DATA sent
    after it must be refused; a 354 there is the defect."""
    mail, rcpt = probe.mail_line(), probe.rcpt_line()
    ehlo = b"EHLO " + probe.helo.encode()
    steps = [
        _OutOfSequence("RCPT before MAIL", (), rcpt, "503 expected (RFC 5321 §3.3)"),
        _OutOfSequence("DATA before MAIL", (), b"DATA", "503 or 554 expected (RFC 5321 §3.3)"),
        _OutOfSequence(
            "DATA with no recipient", (mail,), b"DATA", "503 or 554 expected (RFC 5321 §3.3)"
        ),
        _OutOfSequence(
            "a second MAIL in a transaction",
            (mail, rcpt),
            mail,
            "a second MAIL starts a new transaction with no recipient, so DATA after it "
            "must be refused, 503 or 554 (RFC 5321 §3.3: MAIL resets all state, "
            "recipients included)",
            then=b"DATA",
        ),
        _OutOfSequence(
            "RCPT after RSET", (mail, b"RSET"), rcpt, "503 expected (RFC 5321 §4.1.1.5, §3.3)"
        ),
        _OutOfSequence(
            "RCPT after a new EHLO", (mail, ehlo), rcpt, "503 expected (RFC 5321 §4.1.4, §3.3)"
        ),
        _OutOfSequence(
            "DATA after RSET and a new MAIL",
            (mail, rcpt, b"RSET", mail),
            b"DATA",
            "RSET discards the recipients, so the new transaction has none: 503 or 554 "
            "expected (RFC 5321 §4.1.1.5, §3.3)",
        ),
        _OutOfSequence(
            "DATA after a new EHLO and MAIL",
            (mail, rcpt, ehlo, mail),
            b"DATA",
            "EHLO resets the session as RSET does, recipients included, so the new "
            "transaction has none: 503 or 554 expected (RFC 5321 §4.1.4, §3.3)",
        ),
    ]
    if "CHUNKING" in offered:
        # BDAT takes DATA's place (RFC 3030 §2), so §3.3's order holds for it. No
        # octets follow: refused or not, nothing is left for the server to read.
        steps.append(
            _OutOfSequence("BDAT before MAIL", (), b"BDAT 0 LAST", "503 expected (RFC 5321 §3.3)")
        )
    return steps


def check_state_order(probe: Probe) -> str:
    """Commands out of sequence are refused, never run (RFC 5321 §3.3, §4.1.4).

    Each command of :func:`_out_of_sequence` goes on a connection of its own,
    after EHLO and its setup, one line at a time, and must get a 4xx or 5xx:
    503 is the RFC's "bad sequence of commands", and a refusal for another
    reason (554 to DATA with no recipient, a policy, a 421 that ends the
    session, §3.8) is no defect. A 2xx or 3xx is: RCPT taken before MAIL runs
    a transaction with a sender the client never gave. Every one of these
    commands is an error to the server, so a connection each keeps a server
    with an error limit (Postfix's ``smtpd_hard_error_limit``, as low as 1)
    from ending the session at the next one.

    A step whose setup the server refuses (MAIL on a port that wants AUTH, a
    new EHLO inside a transaction), or whose connection it refuses (a 421
    greeting, :meth:`Probe.connect`: a connection rate limit), is not tried,
    and the others go on: the
    check fails if any command was accepted, is skipped only if none could be
    tried, and its summary names the steps not tried.
    """
    client: WireClient | None
    client, offered = probe.hello()
    got: list[str] = []
    accepted: list[str] = []
    not_tried: list[str] = []
    for step in _out_of_sequence(probe, offered):
        if client is None:
            try:
                client, _ = probe.hello()
            except _Refused as exc:
                not_tried.append(f"{step.what} ({exc})")
                continue
        verdict, said = _try_out_of_sequence(probe, client, step)
        {"refused": got, "accepted": accepted, "not tried": not_tried}[verdict].append(said)
        client = None
    skipped = f"not tried: {'; '.join(not_tried)}" if not_tried else ""
    if accepted:
        raise _Failed(
            "commands out of sequence were accepted: "
            + "; ".join([*accepted, skipped] if skipped else accepted)
        )
    if not got:
        raise _Skipped(f"no command out of sequence could be tried; {skipped}")
    return ", ".join(got) + (f"; {skipped}" if skipped else "")


def _try_out_of_sequence(
    probe: Probe, client: WireClient, step: _OutOfSequence
) -> tuple[str, str]:
    """``step`` on ``client``, a connection of its own: its setup, its line (and its
    ``then``), then the session's end (:func:`_end_out_of_sequence`). The verdict
    ("refused", "accepted" or "not tried") and what to say of it."""
    for line in step.setup:
        answer = ask(client, line)
        if answer.code // 100 != 2:
            _end_out_of_sequence(client, answer)
            return "not tried", f"{step.what} ({_why_not_tried(probe, line, answer)})"
    answer = ask(client, step.line)
    shown = f"{step.what}: {step.line.decode()!r} got {answer}"
    said = f"{step.what} got {answer.code}"
    if step.then is not None and answer.code // 100 == 2:
        answer = ask(client, step.then)
        shown += f", then {step.then.decode()!r} got {answer}"
        said += f", then {step.then.decode()} got {answer.code}"
    _end_out_of_sequence(client, answer)
    if answer.code // 100 in (2, 3):
        return "accepted", f"{shown}, not a refusal: {step.expected}"
    return "refused", said


def _why_not_tried(probe: Probe, line: bytes, answer: ServerReply) -> str:
    """Why a refused setup ``line`` keeps its step from being tried, and what to do."""
    why = f"{line.decode()!r} was answered {answer}"
    if answer.code == 530:
        return (
            f"{why}: the server wants authentication first, RFC 4954 §6, which the checks "
            "do not give"
        )
    if line == probe.mail_line():
        return f"{why}: give a sender the server accepts"
    if line == probe.rcpt_line():
        return f"{why}: give a recipient the server accepts"
    return why


def _end_out_of_sequence(client: WireClient, last: ServerReply) -> None:
    """End a ``state-order`` session after ``last``, its last reply. After a 354 the
    server reads a message that no one should get: the client closes the connection
    inside it, so it has no end and nothing is delivered. After a reply that ends
    the session (:data:`CLOSING`, RFC 5321 §3.8) nothing is owed. Otherwise QUIT
    (:func:`quit_session`)."""
    if last.code == 354:
        client.shutdown_write()
        client.close()
    elif last.code in CLOSING:
        client.close()
    else:
        quit_session(client)


def check_starttls_injection(probe: Probe) -> str:
    """Commands pipelined behind STARTTLS are never run (CVE-2011-0411, RFC 3207 §4.2).

    ``STARTTLS`` and an unknown command go in one write; after the
    handshake, ``NOOP`` must get the first reply, and ``QUIT`` the second.
    A STARTTLS the server offers and then leaves unanswered (closing the
    connection, or silent) fails (:func:`_unanswered_starttls`); one it
    refuses skips the check.
    """
    context = probe.tls_context or insecure_context()
    client, offered = probe.hello()
    if "STARTTLS" not in offered:
        raise _Skipped("STARTTLS is not offered")
    client.send(b"STARTTLS\r\nXSMTPCORE-INJECTED\r\n")
    answer = _starttls_reply(client)
    if not isinstance(answer, ServerReply):
        raise _unanswered_starttls(probe, answer)
    if answer.code != 220:
        raise _Skipped(f"STARTTLS was answered {answer}")
    if client.unread:
        raise _Failed(f"the server answered in plaintext after its 220: {client.unread!r}")
    try:
        client.start_tls(context)
    except (OSError, ssl.SSLError) as exc:
        # Fine if the server dropped the session, unless TLS does not work at all.
        probe.close()
        clean, _ = probe.hello()
        clean.send(b"STARTTLS\r\n")
        if (clean.read_reply() or ServerReply(0, b"")).code != 220:
            raise _Skipped("a clean STARTTLS is refused too") from None
        try:
            clean.start_tls(context)
        except (OSError, ssl.SSLError) as clean_exc:
            raise _Skipped(
                f"the TLS handshake fails even without injection: {clean_exc}"
            ) from None
        return f"the server ended the injected session at the handshake ({exc})"
    client.send(b"NOOP\r\n")
    replies = client.read_replies(1)
    if not replies:
        raise _Failed(
            "over TLS, the server closed the connection instead of answering NOOP, the "
            "first command after the handshake"
        )
    replies += quit_session(client)
    if reply_codes(replies) != [250, 221]:
        raise _Failed(
            f"over TLS, NOOP and QUIT got {reply_codes(replies)}: the command pipelined in "
            "plaintext behind STARTTLS was run after the handshake"
        )
    return "the plaintext behind STARTTLS was dropped"


def _starttls_reply(client: WireClient) -> ServerReply | str:
    """The reply to the STARTTLS just sent, or what the server did instead."""
    try:
        answer = client.read_reply()
    except TimeoutError:
        return f"sent no whole reply within {client.timeout:g} s"
    return "closed the connection" if answer is None else answer


def _unanswered_starttls(probe: Probe, instead: str) -> _Failed:
    """The failure for a STARTTLS the server offered and then left unanswered
    (``instead``: what it did): a session that dies on a command fails every check,
    and a server that will not go on says 421 first (RFC 5321 §3.8). A STARTTLS
    alone, on a new connection, tells whether the command behind it was the cause."""
    probe.close()
    try:
        clean, _ = probe.hello()
    except _Refused as exc:
        return _Failed(
            f"the server offers STARTTLS but {instead} instead of answering it (alone, "
            f"on a new connection, it could not be tried: {exc})"
        )
    clean.send(b"STARTTLS\r\n")
    alone = _starttls_reply(clean)
    if not isinstance(alone, ServerReply):
        return _Failed(
            f"the server offers STARTTLS but {instead} instead of answering it "
            f"(alone, on a new connection, it {alone})"
        )
    return _Failed(
        f"STARTTLS with a command pipelined behind it: the server {instead} instead of "
        f"answering it (alone it got {alone}); a server that will not go on replies 421 "
        "before closing (RFC 5321 §3.8)"
    )
