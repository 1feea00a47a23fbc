"""The SMTP battery's side of a session: connections, replies asked and counted, and
sessions ended as RFC 5321 asks.

:class:`Probe` is what every check of :data:`~smtpcore.testing.check.CHECKS` is
given: where the server is, what to say, and the connections made. The helpers
here, shared by every family of checks, send a command and read its reply, count
the replies owed, and judge how a session ended (QUIT's 221 and the close, RFC
5321 §4.1.1.10). A connection the server refuses (a 421 or 554 greeting, a 421 to
EHLO) skips the check that opened it (:meth:`Probe.connect`).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from smtpcore._errors import LocalProtocolError
from smtpcore.address import parse_mailbox
from smtpcore.smtp import Ehlo
from smtpcore.testing._battery import Failed as _Failed
from smtpcore.testing._battery import OtherProtocol as _OtherProtocol
from smtpcore.testing._battery import Refused as _Refused
from smtpcore.testing._battery import Skipped as _Skipped
from smtpcore.testing._battery import (
    busy_retry_pause,
    close_all,
    ending_said,
    open_wire,
    refused_connection,
    transcript_of,
)
from smtpcore.testing._wire import Exchange, ServerReply, WireClient

__all__ = ["PlainMail", "Probe", "checked_helo", "checked_mailbox", "extensions"]


def temporary_refusal(answer: ServerReply | int | None) -> bool:
    """Whether ``answer`` (a reply or its code) is a 4xx that leaves the session
    standing: a temporary refusal (RFC 5321 §4.2.1), not 421, which ends it (§3.8)."""
    code = answer.code if isinstance(answer, ServerReply) else answer
    return code is not None and code // 100 == 4 and code != 421


@dataclass(frozen=True)
class PlainMail:
    """What plain MAILs showed after a MAIL a check tests got a 4xx
    (:meth:`Probe.plain_mail_after`)."""

    refusing: str | None
    """Why the check is left untested, the server refusing any mail for now, or None
    where a plain MAIL was not refused for now."""
    said: str
    """Where the plain MAILs went and what they got, replies quoted, for a summary:
    ``a plain MAIL after RSET got "250 2.1.0 Ok"``."""


def _quoted(answer: ServerReply | None) -> str:
    """``answer`` in double quotes, for a sentence that goes on after it, or ``no
    reply`` where the server sent none."""
    return f'"{answer}"' if answer is not None else "no reply"


@dataclass
class Probe:
    """What a check needs: where the server is, what to say, and the connections made.

    A check function gets one of these, opens connections with
    :meth:`connect`, and raises to fail or skip; its connections' transcripts
    become the result's.
    """

    host: str
    port: int
    helo: str = "check.smtpcore.test"
    sender: str = "check@smtpcore.test"
    recipient: str = "postmaster@smtpcore.test"
    timeout: float = 10.0
    pause: float = 0.002
    seed: int = 0
    tls_context: ssl.SSLContext | None = None
    max_size_probe: int = 2 << 20
    clients: list[WireClient] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Defects a check found and went on past: they fail the check however it ends,
    a refused connection after them included
    (:func:`~smtpcore.testing._battery.run_one`)."""
    after_session: bool = False
    """Whether the battery's own session ended just before this check: a 421 greeting
    on its first connection is then tried again (:meth:`connect`), as on its later
    ones."""
    stored: Callable[[], Sequence[bytes]] | None = None
    """The messages the server has stored so far, where the caller can see them
    (:func:`~smtpcore.testing.check.check_server`'s ``stored``): checks that send
    mail compare them with what they sent."""
    stored_wait: float | None = None
    """Seconds to go on asking ``stored`` while a message is missing, ``timeout``
    when None: a server may store a message after its 250
    (:func:`~smtpcore.testing.check.check_server`'s ``stored_wait``)."""

    def __post_init__(self) -> None:
        check_session_words(self.helo, self.sender, self.recipient)

    def connect(self) -> WireClient:
        """A new connection, its 220 greeting read.

        A 421 greeting (RFC 5321 §3.8) or a 554 one (§3.1: no service for this
        client) is a server refusing a new connection, busy or limiting a client's
        connection rate (Postfix's ``smtpd_client_connection_rate_limit``,
        postscreen): the server cannot be tested through it, and the check is
        skipped (:meth:`refused`), on the run's first connection as on the dozens
        after. Any other greeting but 220 fails the check.

        A 421 greeting right after the battery's own last session ended (any
        connection but the run's first) may be a per-address limit of sessions that
        has not yet freed that session's slot: it is tried again, a few times within
        ``timeout`` (:func:`~smtpcore.testing._battery.busy_retry_pause`), before it
        counts; the transcript notes each refusal so tried again."""
        started, tried = time.monotonic(), 0
        notes: list[Exchange] = []
        retry = self.after_session or bool(self.clients)
        while True:
            client = open_wire(
                self.host, self.port, timeout=self.timeout, pause=self.pause, kind=WireClient
            )
            tried += 1
            self.clients.append(client)
            client.transcript[:0] = notes
            greeting = client.read_reply()
            pause = busy_retry_pause(tried, started, self.timeout) if retry else None
            if greeting is None or greeting.code != 421 or pause is None:
                break
            client.close()
            self.clients.remove(client)
            notes.append(Exchange("note", note=f"greeted {greeting}: tried again"))
            time.sleep(pause)
        if greeting is not None and greeting.code in _NO_SERVICE:
            if greeting.code == 554 and not client.closed:
                client.send(b"QUIT\r\n")  # which §3.1 has such a server wait for
            self.refused(greeting, greeting=True)
        if greeting is None:
            raise _Failed("the server closed the connection without a greeting (220 expected)")
        if greeting.code != 220:
            raise _Failed(f"the greeting was {greeting} rather than 220")
        return client

    def refused(self, answer: ServerReply, *, greeting: bool = False) -> None:
        """Raise :class:`~smtpcore.testing._battery.Refused` where ``answer``, the
        greeting or the reply to the first command of a connection, refuses service
        (421, or 554 as a ``greeting``); else return."""
        refusing = _NO_SERVICE if greeting else (421,)
        if answer.code not in refusing:
            return
        if answer.code == 421:
            raise refused_connection(answer, "RFC 5321 §3.8: a connection rate limit?")
        raise refused_connection(
            answer, "RFC 5321 §3.1 (no service for this client): a connection rate limit?"
        )

    def hello(self) -> tuple[WireClient, dict[str, str]]:
        """A new connection after EHLO: the client and the offered extensions. A 421 to
        EHLO is a refused connection, as a 421 greeting is (:meth:`connect`)."""
        client = self.connect()
        answer = ask(client, b"EHLO " + self.helo.encode())
        self.ehlo_answered(client, answer)
        if answer.code != 250:
            raise _Failed(f"EHLO was answered {answer}")
        return client, extensions(answer)

    def ehlo_answered(self, client: WireClient, answer: ServerReply | None) -> bool:
        """What every check does with ``answer``, to a connection's first EHLO sent
        whole: a 421 refuses the connection (:meth:`refused`), an LMTP server stops
        the run (:meth:`lmtp_after`). Else this returns whether the connection is
        still in step, for the check to judge ``answer``."""
        if answer is None:
            return True
        self.refused(answer)
        return self.lmtp_after(client, answer)

    def lmtp_after(self, client: WireClient, answer: ServerReply) -> bool:
        """Where ``answer``, to the connection's first EHLO, is a 5xx, ask LHLO: an LMTP
        server refuses EHLO and takes LHLO (RFC 2033 §4.1), and none of the checks,
        which speak SMTP, can test it. LHLO taken, a verb no server knows must be
        refused (RFC 5321 §4.2.4), or the server takes any command and is no LMTP
        server. Both confirmed, the session ends with QUIT and
        :class:`~smtpcore.testing._battery.OtherProtocol` says so.

        Else the refused EHLO is the check's to judge, and this returns whether the
        connection is still in step: False where LHLO or the verb went unanswered
        within :data:`LHLO_WAIT` (or the connection failed), noted in the transcript,
        since a reply that came later would be taken for the next command's."""
        if answer.code // 100 != 5 or client.closed:
            return True
        wait = min(self.timeout, LHLO_WAIT)
        asked = b"LHLO " + self.helo.encode()
        try:
            lhlo = _answer_within(client, asked, wait)
            if lhlo is None or lhlo.code != 250:
                return True
            asked = _NONSENSE_VERB
            nonsense = _answer_within(client, asked, wait)
        except OSError as exc:
            said = ending_said(exc, wait)
            note = f"{asked.split()[0].decode()} unanswered ({said}): EHLO's refusal is judged"
            client.transcript.append(Exchange("note", note=note))
            return False
        if nonsense is None or nonsense.code // 100 in (2, 3):
            return True
        client.send(b"QUIT\r\n")
        client.read_until_closed()
        raise _OtherProtocol(
            f"this is an LMTP server: EHLO was answered {answer} and LHLO 250, as RFC "
            "2033 §4.1 has an LMTP server answer; the battery checks SMTP servers, so "
            "no check was run (point it at the server's SMTP port)"
        )

    def transaction(self, client: WireClient) -> None:
        """MAIL and RCPT, one at a time; a refusal skips the check (wrong recipient),
        a connection closed instead of a reply fails it (the session died)."""
        for line in (self.mail_line(), self.rcpt_line()):
            answer = ask(client, line)
            if answer.code // 100 != 2:
                raise _Skipped(
                    f"{line.decode()!r} was answered {answer}: give a sender and a "
                    "recipient the server accepts"
                )

    def sender_accepted(self, client: WireClient) -> None:
        """A plain MAIL from the sender, then RSET, before a check probes MAIL's
        parameters: a server that refuses the sender refuses every probing line for
        it, which would pass for a refusal of the parameter, or fail a check that
        wants another code. As in :meth:`transaction`, that refusal skips the check.
        RSET must get 250 (RFC 5321 §4.1.1.5), so the probing starts with no
        transaction open."""
        answer = ask(client, self.mail_line())
        if answer.code // 100 != 2:
            raise _Skipped(
                f"{self.mail_line().decode()!r} was answered {answer}: give a sender the "
                "server accepts"
            )
        reset = ask(client, b"RSET")
        if reset.code != 250:
            raise _Failed(f"RSET after an accepted MAIL got {reset}, not 250 (RFC 5321 §4.1.1.5)")

    def mail_refused_for_now(
        self, client: WireClient, line: bytes, answer: ServerReply | None
    ) -> str | None:
        """Why the check is left untested, or None, after ``answer`` to ``line``, a
        MAIL the check tests (:meth:`plain_mail_after`)."""
        plain = self.plain_mail_after(client, line, answer)
        return plain.refusing if plain else None

    def plain_mail_after(
        self, client: WireClient, line: bytes, answer: ServerReply | None
    ) -> PlainMail | None:
        """What plain MAILs showed after ``answer`` to ``line``, a MAIL the check
        tests, or None where ``answer`` is no 4xx and nothing was asked. A 4xx (but
        421, which ends the session, RFC 5321 §3.8) may answer the line (a server that
        keeps a SIZE over its fixed limit for later, or fails on what it read) or
        refuse any mail for now (§4.2.1; a message-rate limit, Postfix's
        ``smtpd_client_message_rate_limit`` answers ``450 4.7.1``). RSET and a plain
        MAIL on the same session, then, where that gets a 4xx too, a plain MAIL on a
        new connection (:meth:`hello`, a busy greeting tried again) tell which: a
        server that stays broken for the rest of a session after the tested line
        answers the new one as it should. A 4xx there too, or the new connection
        refused, is the server refusing mail, and the check is skipped (defects found
        before still fail it, :attr:`problems`); anything else leaves ``answer`` to
        the check, judged as it says. A plain MAIL taken on the same session leaves
        its transaction open for the caller's RSET."""
        if not temporary_refusal(answer):
            return None
        reset = client.command(b"RSET")
        plain = client.command(self.mail_line()) if reset is not None else None
        after_reset = f"a plain MAIL after RSET got {_quoted(plain)}"
        if not temporary_refusal(plain):
            return PlainMail(None, after_reset)
        try:
            fresh, _ = self.hello()
        except _Refused as refusal:
            again = f"a new connection was refused ({refusal})"
        else:
            renewed = fresh.command(self.mail_line())
            quit_session(fresh)
            if renewed is None or renewed.code // 100 != 4:
                # the 4xx stuck to that session: it answered the line
                on_new = f"one on a new connection got {_quoted(renewed)}"
                return PlainMail(None, f"{after_reset}, and {on_new}")
            again = f"a plain MAIL on a new connection got {renewed}"
        return PlainMail(
            f"{line.decode('utf-8', 'replace')!r} was answered {answer}, a plain MAIL "
            f"after RSET got {plain}, and {again}: the server refuses mail for now (RFC "
            "5321 §4.2.1; a message-rate limit?), which leaves the check untested",
            after_reset,
        )

    def mail_line(self, params: str = "") -> bytes:
        return f"MAIL FROM:<{self.sender}>{params}".encode()

    def rcpt_line(self) -> bytes:
        return f"RCPT TO:<{self.recipient}>".encode()

    def transcript(self) -> tuple[Exchange, ...]:
        return transcript_of(self.clients)

    def close(self) -> None:
        """Close every connection (their transcripts stay for the result)."""
        close_all(self.clients)

    def forget(self, keep: int = 0) -> None:
        """Close every connection but the first ``keep`` and drop its transcript: it
        showed nothing wrong. A connection dropped unclosed would hold its socket
        until the garbage collector found it (a ``ResourceWarning``)."""
        for client in self.clients[keep:]:
            client.close()
        del self.clients[keep:]


LHLO_WAIT: Final = 1.0
"""Seconds, at most ``timeout``, that the LHLO asked after a refused EHLO, and the
verb after it, are waited for (:meth:`Probe.lmtp_after`). The server has just
answered EHLO on the same connection, so what holds back a first reply (a reverse
lookup, a greeting delay) is behind it, and an LMTP server answers LHLO as it does
EHLO, with a 250 at once. Only a refusal may be held back (Postfix sleeps a second
before an error reply, ``smtpd_error_sleep_time``), and a refusal, or no answer,
leaves the refused EHLO to be judged as before. A server that stalls on a verb it
does not know costs each check a second, not its whole ``timeout``."""

_NONSENSE_VERB: Final = b"XNOSUCHVERB"
"""A command no server knows, which any but one that takes every command refuses
(RFC 5321 §4.2.4: ``500``), asked after LHLO is taken to confirm an LMTP server."""


def _answer_within(client: WireClient, line: bytes, wait: float) -> ServerReply | None:
    """Send ``line`` and read its reply within ``wait`` seconds, or None where the server
    closed first; raises ``OSError`` (``TimeoutError`` when nothing came in time)."""
    client.send(line + b"\r\n")
    return client.read_reply(time.monotonic() + wait)


_NO_SERVICE: Final = (421, 554)
"""Greetings that refuse service: 421, "service not available, closing" (RFC 5321
§3.8), and 554 (§3.1), after which the server waits for QUIT. Only 421 ends a
session at a command."""


def checked_helo(helo: object) -> str:
    """``helo`` if ``EHLO`` can carry it as one word (RFC 5321 §4.1.1.1), else
    ValueError: a CR or LF would put commands of the caller's on the wire, which
    the checks would then count as the server's doing."""
    if not isinstance(helo, str):
        raise ValueError(f"helo must be a str, not {helo!r}")
    try:
        Ehlo(helo)
    except LocalProtocolError as exc:
        raise ValueError(f"helo {helo!r}: {exc}") from None
    return helo


def checked_mailbox(
    option: str, address: object, *, null: bool = False, postmaster: bool = False
) -> str:
    """``address`` if it parses as a mailbox (RFC 5321 §4.1.2, RFC 6531 §3.3), is
    empty where ``null`` allows the null path (§4.5.5), or is ``Postmaster`` in any
    letter case where ``postmaster`` allows it (a recipient with no domain,
    §4.1.1.3), else ValueError naming the ``option``: CR, LF, NUL or a lone
    surrogate (what a shell's non-UTF-8 octets become) cannot go on the wire."""
    if not isinstance(address, str):
        raise ValueError(f"{option} must be a str, not {address!r}")
    if null and not address:
        return address
    if postmaster and address.lower() == "postmaster":
        return address
    try:
        parse_mailbox(address)
    except ValueError as exc:
        raise ValueError(f"{option} {address!r}: {exc}") from None
    return address


def check_session_words(helo: object, sender: object, recipient: object) -> None:
    """What the checks say, checked before anything connects (see :func:`checked_helo`)."""
    checked_helo(helo)
    checked_mailbox("sender", sender, null=True)
    checked_mailbox("recipient", recipient, postmaster=True)


def extensions(ehlo: ServerReply) -> dict[str, str]:
    """The EHLO keywords (upper case) and their parameters (RFC 5321 §4.1.1.1)."""
    found = {}
    for line in ehlo.lines[1:]:
        keyword, _, rest = line.decode("ascii", "replace").partition(" ")
        found[keyword.upper()] = rest.strip()
    return found


def offered_size(offered: Mapping[str, str]) -> int | None:
    """The message size limit EHLO offers (``SIZE n``, RFC 1870 §4), or None where
    there is none: no SIZE, no number, or 0 (no fixed limit)."""
    words = offered.get("SIZE", "").split()
    if not words or not words[0].isascii() or not words[0].isdigit() or int(words[0]) == 0:
        return None
    return int(words[0])


def ask(client: WireClient, line: bytes) -> ServerReply:
    """Send one line and read its reply. A connection closed where the reply was due
    fails the check: whatever else it tests, a session that dies on a command is a
    crash, and the replies it never sent must not compare equal to others."""
    answer = client.command(line)
    if answer is None:
        shown = line.decode("utf-8", "replace")
        raise _Failed(f"the server closed the connection instead of answering {shown!r}")
    return answer


def owed_replies(client: WireClient, count: int, what: str) -> list[ServerReply]:
    """``count`` replies, or the check fails: the server closed with some still owed."""
    replies = client.read_replies(count)
    if len(replies) < count:
        raise _Failed(
            f"the server closed the connection after {len(replies)} of the {count} "
            f"replies owed to {what}"
        )
    return replies


def reply_codes(replies: Sequence[ServerReply]) -> list[int]:
    return [answer.code for answer in replies]


def shown_codes(codes: Sequence[int]) -> str:
    """Reply codes for a summary line: a long run is cut in the middle."""
    if len(codes) <= 16:
        return str(list(codes))
    middle = len(codes) - 12
    return f"[{', '.join(map(str, codes[:8]))}, ... ({middle} more) ..., " + (
        f"{', '.join(map(str, codes[-4:]))}] ({len(codes)} replies)"
    )


CLOSING: Final = (421, 521)
"""Replies with which a server ends the session itself, owing QUIT nothing after:
421 (RFC 5321 §3.8) and 521 (RFC 7504 §3; Postfix's answer to a bare LF)."""


def message_then_quit(codes: Sequence[int]) -> bool:
    """Whether ``codes``, what a message and the ``QUIT`` written behind it got, are
    one reply to each, in order: the message's (never QUIT's 221), then at most one
    for QUIT: its 221 (RFC 5321 §4.1.1.10), or, after a refused message, one that
    ends the session, which a server shutting down sends to any command, QUIT
    included (§3.8; Postfix at its ``smtpd_hard_error_limit``). After an accepted
    message a 421 is not taken for QUIT's: it is also what a server gives a line
    inside the message that it ran as a command and answered by closing, which is
    the defect looked for, and a server has no cause to shut down at a QUIT that
    follows a message it took. More, or another second reply, means a line inside
    the message was answered as a command."""
    if not 0 < len(codes) <= 2 or codes[0] == 221:
        return False
    if len(codes) == 1:
        return True
    refused = codes[0] >= 400
    return codes[1] == 221 or (refused and codes[1] in CLOSING)


def session_end(
    client: WireClient, replies: Sequence[ServerReply], *, by_quit: bool = True
) -> str | None:
    """What is wrong with how a session ended, read to the close, or None.

    The client ends it with QUIT, which gets 221 and then the close (RFC 5321
    §4.1.1.10), unless the server ended the session first (:data:`CLOSING`);
    or, ``by_quit`` false, by closing its side of the connection, after which
    the server can read nothing more (it cancels the transaction, §4.1.1.10)
    and has nothing left to do but close. Either way a server still open at
    the timeout may yet answer, so the replies that came cannot be counted:
    that fails, never passes on what came so far (a server that dropped QUIT
    with the rest of a read would otherwise pass a check by saying nothing).
    """
    codes = reply_codes(replies)
    if not client.closed and not by_quit:
        return (
            f"the server did not close the connection within {client.timeout:g} s of the "
            "client closing its side, so a reply may yet come"
        )
    if not client.closed:
        if 221 in codes:
            return (
                f"the server answered QUIT but did not close the connection within "
                f"{client.timeout:g} s (RFC 5321 §4.1.1.10)"
            )
        return f"QUIT was left unanswered: no 221 and no close within {client.timeout:g} s"
    if by_quit and 221 not in codes and not (codes and codes[-1] in CLOSING):
        return "the server closed the connection with QUIT unanswered (no 221)"
    return None


def quit_session(client: WireClient) -> list[ServerReply]:
    """QUIT, and every reply until the server closes (an owed-to-no-one reply shows
    here); the check fails where the session does not end as QUIT asks
    (:func:`session_end`). A connection already closed, or one a write failed on,
    owes QUIT nothing."""
    if client.closed or client.write_failed:
        return []
    client.send(b"QUIT\r\n")
    replies = client.read_until_closed()
    wrong = session_end(client, replies)
    if wrong:  # with no reply, the wrong says so itself
        raise _Failed(
            f"QUIT got {shown_codes(reply_codes(replies))}: {wrong}" if replies else wrong
        )
    return replies


def probe_headers(probe: Probe, subject: str) -> bytes:
    """The header section of a probing message, with the fields a content policy
    asks for (From:, Date:, Message-ID:, RFC 5322 §3.6), so that it refuses the
    message, if at all, for what the check tests."""
    return (
        f"From: <{probe.sender}>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}.check@smtpcore.test>\r\n"
        f"Subject: {subject}\r\n\r\n"
    ).encode()


for _public in (checked_helo, checked_mailbox):
    _public.__module__ = "smtpcore.testing.check"  # where users import them from
