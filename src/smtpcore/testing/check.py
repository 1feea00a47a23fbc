"""Check any SMTP server, in any language, for the bugs that split two readers of a session.

:func:`check_server` connects to a host and port; :func:`check_handler`
first serves an smtpcore :class:`~smtpcore.handler.Handler` with the asyncio
adapter on a loopback port. Either runs a battery of checks (:data:`CHECKS`)
over real sockets, each on fresh connections, and returns a
:class:`CheckReport`: every check passed, failed or skipped (an extension the
server does not offer), and every failure carries the transcript that shows
it, byte for byte.

The checks send ordinary mail (to ``recipient``, from ``sender``): point them
at a server whose recipient is a sink. Every check ends its sessions with
``QUIT`` (``bdat-octets`` by closing its side of the connection instead) and
reads until the server closes, so a reply the server owes no one (the mark of
a command read from inside a message, a line or a chunk) is counted, not
missed; a server that leaves QUIT unanswered, or the connection open after the
session's end, fails rather than pass on the replies that came. Nothing here
needs Hypothesis; the checks are deterministic but for the seed of the
chunkings they try.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from smtpcore._errors import LocalProtocolError
from smtpcore._ip import host_port
from smtpcore.address import parse_mailbox
from smtpcore.smtp import Ehlo
from smtpcore.testing._battery import (
    CheckReport,
    CheckResult,
    Outcome,
    ServerUnreachable,
    check_run_arguments,
    close_all,
    insecure_context,
    open_wire,
    refused_connection,
    run_one,
    selected,
    transcript_of,
    unjudged,
)
from smtpcore.testing._battery import Failed as _Failed
from smtpcore.testing._battery import Refused as _Refused
from smtpcore.testing._battery import Skipped as _Skipped
from smtpcore.testing._wire import (
    Exchange,
    ServerReply,
    WireClient,
    checked_host,
)

if TYPE_CHECKING:
    from smtpcore.handler import Handler

__all__ = [
    "CHECKS",
    "SMUGGLING_ENDINGS",
    "CheckReport",
    "CheckResult",
    "Exchange",
    "Outcome",
    "ServerReply",
    "ServerUnreachable",
    "check_handler",
    "check_server",
    "checked_helo",
    "checked_mailbox",
]


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

    def __post_init__(self) -> None:
        _check_session_words(self.helo, self.sender, self.recipient)

    def connect(self) -> WireClient:
        """A new connection, its 220 greeting read.

        A 421 greeting (RFC 5321 §3.8) or a 554 one (§3.1: no service for this
        client) is a server refusing a new connection, busy or limiting a client's
        connection rate (Postfix's ``smtpd_client_connection_rate_limit``,
        postscreen): the server cannot be tested through it, and the check is
        skipped (:meth:`refused`), on the run's first connection as on the dozens
        after. Any other greeting but 220 fails the check."""
        client = open_wire(
            self.host, self.port, timeout=self.timeout, pause=self.pause, kind=WireClient
        )
        self.clients.append(client)
        greeting = client.read_reply()
        if greeting is not None and greeting.code in _NO_SERVICE:
            if greeting.code == 554 and not client.closed:
                client.send(b"QUIT\r\n")  # which §3.1 has such a server wait for
            self.refused(greeting, greeting=True)
        if greeting is None or greeting.code != 220:
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
        answer = _ask(client, b"EHLO " + self.helo.encode())
        self.refused(answer)
        if answer.code != 250:
            raise _Failed(f"EHLO was answered {answer}")
        return client, extensions(answer)

    def transaction(self, client: WireClient) -> None:
        """MAIL and RCPT, one at a time; a refusal skips the check (wrong recipient),
        a connection closed instead of a reply fails it (the session died)."""
        for line in (self.mail_line(), self.rcpt_line()):
            answer = _ask(client, line)
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
        answer = _ask(client, self.mail_line())
        if answer.code // 100 != 2:
            raise _Skipped(
                f"{self.mail_line().decode()!r} was answered {answer}: give a sender the "
                "server accepts"
            )
        reset = _ask(client, b"RSET")
        if reset.code != 250:
            raise _Failed(f"RSET after an accepted MAIL got {reset}, not 250 (RFC 5321 §4.1.1.5)")

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


def _check_session_words(helo: object, sender: object, recipient: object) -> None:
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


def _ask(client: WireClient, line: bytes) -> ServerReply:
    """Send one line and read its reply. A connection closed where the reply was due
    fails the check: whatever else it tests, a session that dies on a command is a
    crash, and the replies it never sent must not compare equal to others."""
    answer = client.command(line)
    if answer is None:
        shown = line.decode("utf-8", "replace")
        raise _Failed(f"the server closed the connection instead of answering {shown!r}")
    return answer


def _owed(client: WireClient, count: int, what: str) -> list[ServerReply]:
    """``count`` replies, or the check fails: the server closed with some still owed."""
    replies = client.read_replies(count)
    if len(replies) < count:
        raise _Failed(
            f"the server closed the connection after {len(replies)} of the {count} "
            f"replies owed to {what}"
        )
    return replies


def _codes(replies: Sequence[ServerReply]) -> list[int]:
    return [answer.code for answer in replies]


def _show(codes: Sequence[int]) -> str:
    """Reply codes for a summary line: a long run is cut in the middle."""
    if len(codes) <= 16:
        return str(list(codes))
    middle = len(codes) - 12
    return f"[{', '.join(map(str, codes[:8]))}, ... ({middle} more) ..., " + (
        f"{', '.join(map(str, codes[-4:]))}] ({len(codes)} replies)"
    )


_CLOSING: Final = (421, 521)
"""Replies with which a server ends the session itself, owing QUIT nothing after:
421 (RFC 5321 §3.8) and 521 (RFC 7504 §3; Postfix's answer to a bare LF)."""


def _message_then_quit(codes: Sequence[int]) -> bool:
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
    return codes[1] == 221 or (refused and codes[1] in _CLOSING)


def _session_end(
    client: WireClient, replies: Sequence[ServerReply], *, by_quit: bool = True
) -> str | None:
    """What is wrong with how a session ended, read to the close, or None.

    The client ends it with QUIT, which gets 221 and then the close (RFC 5321
    §4.1.1.10), unless the server ended the session first (:data:`_CLOSING`);
    or, ``by_quit`` false, by closing its side of the connection, after which
    the server can read nothing more (it cancels the transaction, §4.1.1.10)
    and has nothing left to do but close. Either way a server still open at
    the timeout may yet answer, so the replies that came cannot be counted:
    that fails, never passes on what came so far (a server that dropped QUIT
    with the rest of a read would otherwise pass a check by saying nothing).
    """
    codes = _codes(replies)
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
    if by_quit and 221 not in codes and not (codes and codes[-1] in _CLOSING):
        return "the server closed the connection with QUIT unanswered (no 221)"
    return None


def _quit(client: WireClient) -> list[ServerReply]:
    """QUIT, and every reply until the server closes (an owed-to-no-one reply shows
    here); the check fails where the session does not end as QUIT asks
    (:func:`_session_end`). A connection already closed, or one a write failed on,
    owes QUIT nothing."""
    if client.closed or client.write_failed:
        return []
    client.send(b"QUIT\r\n")
    replies = client.read_until_closed()
    wrong = _session_end(client, replies)
    if wrong:
        raise _Failed(f"QUIT got {_show(_codes(replies))}: {wrong}")
    return replies


# -- the checks ----------------------------------------------------------------------------

_CONTENT: Final = (
    b"From: <check@smtpcore.test>\r\n"
    b"Subject: smtpcore check\r\n"
    b"\r\n"
    b"..a line that starts with a dot\r\n"
    b"..\r\n"
    b"last line\r\n"
    b".\r\n"
)


def _session_steps(probe: Probe) -> list[bytes]:
    """A whole session, one item per lock-step write (each answered by one reply)."""
    return [
        b"EHLO " + probe.helo.encode() + b"\r\n",
        probe.mail_line() + b"\r\n",
        probe.rcpt_line() + b"\r\n",
        b"DATA\r\n",
        _CONTENT,
        b"RSET\r\n",
        b"NOOP\r\n",
        b"QUIT\r\n",
    ]


def _cut(data: bytes, points: Sequence[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p for p in points if 0 < p < len(data))})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def _chunkings(seed: int) -> dict[str, Callable[[bytes], list[bytes]]]:
    rng = random.Random(seed)

    def at_random(data: bytes) -> list[bytes]:
        return _cut(data, rng.sample(range(1, max(len(data), 2)), min(3, len(data) - 1)))

    return {
        "one byte at a time": lambda data: [data[i : i + 1] for i in range(len(data))],
        "split inside every CRLF": lambda data: _cut(
            data, [i + 1 for i in range(len(data)) if data[i : i + 2] == b"\r\n"]
        ),
        f"three random splits a write (seed {seed})": at_random,
        "a split after every line's first octet": lambda data: _cut(
            data, [1, *(i + 2 for i in range(len(data)) if data[i : i + 1] == b"\n")]
        ),
    }


def _run_chunked(probe: Probe, chunking: Callable[[bytes], list[bytes]] | None) -> list[int]:
    """The session's reply codes, -1 where the connection closed with a reply due."""
    client = probe.connect()
    codes: list[int] = []
    for step in _session_steps(probe)[:-1]:
        pieces = chunking(step) if chunking else None
        client.send(step, pieces)
        answer = client.read_reply()
        if answer is not None and not codes:
            probe.refused(answer)  # EHLO, as in Probe.hello
        codes.append(answer.code if answer else -1)
        if answer is None:
            break
    return codes + _codes(_quit(client))


def check_chunking(probe: Probe) -> str:
    """The same session gives the same replies however the network splits it.

    A server that takes one read for one command, or loses a CR at a read's
    end, answers differently when a command arrives in pieces (RFC 5321
    §2.3.8: only CRLF ends a line, wherever the reads fall).
    """
    reference = _run_chunked(probe, None)
    for code in reference[: len(_session_steps(probe)) - 1]:  # QUIT's replies after
        if code == -1:
            raise _Failed(
                f"unsplit, the session got {_show(reference)}: the server closed the "
                "connection where a reply was due (-1)"
            )
        if code // 100 not in (2, 3):
            raise _Skipped(
                f"the unsplit session was refused (codes {reference}): check the recipient"
            )
    for name, chunking in _chunkings(probe.seed).items():
        probe.close()
        codes = _run_chunked(probe, chunking)
        if codes == reference:
            probe.forget(keep=1)  # keep the unsplit run, to compare with a failing one
        else:
            closed = " (-1: the connection closed where a reply was due)" if -1 in codes else ""
            raise _Failed(
                f"written {name}, the session got {_show(codes)} instead of "
                f"{_show(reference)}{closed}"
            )
    return f"{len(_chunkings(0))} chunkings gave the replies {reference}"


SMUGGLING_ENDINGS: Final[Mapping[str, bytes]] = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "LF.CR": b"\n.\r",
    "CRLF NUL.CRLF": b"\r\n\x00.\r\n",
    "CRLF.NUL CRLF": b"\r\n.\x00\r\n",
    "LF NUL.LF": b"\n\x00.\n",
}
"""End-of-data look-alikes that a server must not take for ``CRLF.CRLF``
(SMTP smuggling: a second reader of the same message ends it elsewhere)."""

_MARKER: Final = b"NOOP smtpcore-smuggling-marker\r\n"


def check_smuggling(probe: Probe) -> str:
    """No end-of-data look-alike ends a message (SMTP smuggling).

    For each sequence in :data:`SMUGGLING_ENDINGS`, a message holds the
    sequence followed by a ``NOOP`` marker line, then ends properly, and
    ``QUIT`` follows. The replies must be the message's and then QUIT's
    (221, or after a refused message a 421 or 521 that ends the session, RFC
    5321 §3.8), and then the close; a message answered 421 or 521 owes QUIT
    nothing. A server that
    ended the message at the look-alike answers the marker (and the rest) as
    commands: more than two replies, or a second one that cannot answer QUIT
    (:func:`_message_then_quit`). Refusing the message (RFC 5321 §4.1.1.4 allows only CRLF.CRLF;
    Postfix replies 550 or 521 for a bare LF) is fine.

    The message goes in two writes, the probe's pause apart, split after the
    look-alike: a server that ends the message there and drops the rest of
    that read (its pipelined commands) would answer one reply to a single
    write, yet run the marker when it comes in a read of its own, as an
    attacker's relay may send it. Where both writes still come in one read,
    such a server drops QUIT with the marker: QUIT left unanswered fails too.
    """
    ran: list[str] = []
    out_of_order: list[str] = []
    unanswered: list[str] = []
    unfinished: list[str] = []
    untested = ""
    for index, (name, ending) in enumerate(SMUGGLING_ENDINGS.items()):
        try:
            client, _ = probe.hello()
        except _Refused as exc:
            if not (ran or out_of_order or unanswered or unfinished):
                raise
            untested = f" (untested: {', '.join(list(SMUGGLING_ENDINGS)[index:])}, as {exc})"
            break
        probe.transaction(client)
        answer = _ask(client, b"DATA")
        if answer.code != 354:
            raise _Skipped(f"DATA was answered {answer}")
        head = b"Subject: smtpcore smuggling check\r\n\r\nbefore" + ending
        tail = _MARKER + b"after\r\n.\r\n" + b"QUIT\r\n"
        client.send(head + tail, [head, tail])
        replies = client.read_until_closed()
        codes = _codes(replies)
        if not codes:  # the message is owed a reply, refusal or not
            unanswered.append(name)
        elif len(codes) > 2:
            ran.append(f"{name} ({len(codes)} replies: {_show(codes)})")
        elif not _message_then_quit(codes):
            out_of_order.append(f"{name} ({codes})")
        elif wrong := _session_end(client, replies):
            unfinished.append(f"{name} ({codes}: {wrong})")
        else:
            probe.clients.remove(client)
            client.close()
            continue
        probe.close()
    problems = []
    if ran:
        problems.append(
            "a message and QUIT got more than two replies, so the message ended early and "
            f"the marker line after the look-alike was run as a command: {'; '.join(ran)}"
        )
    if out_of_order:
        problems.append(
            "a message and QUIT got two replies, the second no answer to QUIT (221; after "
            "a refusal 421 or 521), so the message ended early and the marker line after "
            f"the look-alike was answered in QUIT's place: {'; '.join(out_of_order)}"
        )
    if unfinished:
        problems.append(
            "a message and QUIT did not end with QUIT's 221 and the close, so the server "
            "left unread what came after the message (one that ends the message at the "
            "look-alike and drops the rest of its read, the marker, the real end and QUIT, "
            f"does): {'; '.join(unfinished)}"
        )
    if unanswered:
        problems.append(
            f"a message holding {', '.join(unanswered)} got no reply before the server "
            "closed the connection or fell silent"
        )
    if problems:
        raise _Failed("; ".join(problems) + untested)
    return f"none of {len(SMUGGLING_ENDINGS)} look-alikes ended a message"


def check_pipelining(probe: Probe) -> str:
    """Pipelined commands get one reply each, in order (RFC 2920 §3.1).

    A group mixing accepted and refused commands is sent one command at a
    time on one connection and in a single write on another; both must get
    the same codes, and its RCPT with no MAIL before it must be refused, which a
    server that takes it does both ways alike (RFC 5321 §3.3; ``state-order``
    tries more). A server that ends the session inside the group sent one
    command at a time (421 to any command, RFC 5321 §3.8: Postfix does at its
    ``smtpd_hard_error_limit``) leaves nothing to compare: the check is skipped.
    """
    client, offered = probe.hello()
    if "PIPELINING" not in offered:
        raise _Skipped("PIPELINING is not offered")
    group = [
        probe.mail_line(),
        b"RCPT TO:<no-closing-bracket@smtpcore.test",
        probe.rcpt_line(),
        b"RSET",
        probe.rcpt_line(),  # no MAIL: refused (_NO_MAIL_IN_GROUP)
        probe.mail_line(),
        b"RSET",
        b"NOOP",
    ]
    lock_step = []
    for line in group:
        answer = _ask(client, line)
        if answer.code in _CLOSING:
            raise _Skipped(f"the server ended the session at {line.decode()!r} ({answer})")
        lock_step.append(answer.code)
    lock_step += _codes(_quit(client))
    client, _ = probe.hello()
    client.send(b"".join(line + b"\r\n" for line in group))
    pipelined = _codes(_owed(client, len(group), "the pipelined group"))
    pipelined += _codes(_quit(client))
    if pipelined != lock_step:
        raise _Failed(
            f"pipelined, the group got {_show(pipelined)}; one at a time it got {_show(lock_step)}"
        )
    if lock_step[_NO_MAIL_IN_GROUP] // 100 in (2, 3):
        raise _Failed(
            f"the group got {_show(pipelined)} both ways, but its RCPT after RSET, with no "
            f"MAIL, got {lock_step[_NO_MAIL_IN_GROUP]}, not a refusal (503 expected, RFC "
            "5321 §3.3)"
        )
    return f"one reply per command, in order: {pipelined}"


_NO_MAIL_IN_GROUP: Final = 4
"""Where the pipelining group's RCPT with no MAIL before it stands: refused, whatever
else the server does (RFC 5321 §3.3), for a 2xx there compares equal both ways."""


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
    §4.1.1.5, §4.1.4), so RCPT, DATA and BDAT must find one open.

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
        answer = _ask(client, line)
        if answer.code // 100 != 2:
            _end_out_of_sequence(client, answer)
            return "not tried", f"{step.what} ({_why_not_tried(probe, line, answer)})"
    answer = _ask(client, step.line)
    shown = f"{step.what}: {step.line.decode()!r} got {answer}"
    said = f"{step.what} got {answer.code}"
    if step.then is not None and answer.code // 100 == 2:
        answer = _ask(client, step.then)
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
    the session (:data:`_CLOSING`, RFC 5321 §3.8) nothing is owed. Otherwise QUIT
    (:func:`_quit`)."""
    if last.code == 354:
        client.shutdown_write()
        client.close()
    elif last.code in _CLOSING:
        client.close()
    else:
        _quit(client)


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
    replies = client.read_replies(1) + _quit(client)
    if _codes(replies) != [250, 221]:
        raise _Failed(
            f"over TLS, NOOP and QUIT got {_codes(replies)}: the command pipelined in "
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


def check_command_line_length(probe: Probe) -> str:
    """An over-long command line is one line: one reply, 250 or 500, or 421 and the close.

    RFC 5321 §4.5.3.1.4 sets the limit, §4.5.3.1.9 gives "500 Line too long",
    and §3.8 lets a server end the session with 421 instead. A line at the
    limit goes first and must get 250 (:func:`_shortest_limit_taken`): a
    server may refuse longer lines, never that one (a server that refuses
    NOOP's argument is tried with a long HELO instead).

    A 10,000-octet ``NOOP`` line, then ``NOOP`` and ``QUIT``; a server that
    cuts the line at its limit and reads the rest as more commands answers
    too often. Where the long line gets a reply that ends the session
    (:data:`_CLOSING`), nothing more is sent (:func:`_closed_at_long_line`).
    """
    client = probe.connect()
    _shortest_limit_taken(probe, client)
    client.send(b"NOOP " + b"x" * 9993 + b"\r\n")
    first = client.read_reply()
    if first is not None and first.code in _CLOSING:
        return _closed_at_long_line(client, first)
    client.send(b"NOOP\r\n")
    replies = ([first] if first else []) + client.read_replies(1) + _quit(client)
    codes = _codes(replies)
    if len(codes) != 3 or codes[1:] != [250, 221]:
        raise _Failed(f"a long line, NOOP and QUIT got {_show(codes)}, not one reply each")
    if codes[0] not in (250, 500):
        raise _Failed(f"the long line was answered {codes[0]}, not 500 (or 250)")
    return f"the 10,000-octet line got {codes[0]}"


_COMMAND_LINE_MINIMUM: Final = 512
"""The command line every server MUST take, CRLF included (RFC 5321 §4.5.3.1.4)."""

_TEXT_LINE_MINIMUM: Final = 1000
"""The text line every server MUST take, CRLF included (RFC 5321 §4.5.3.1.6)."""


def _noop_at_the_limit() -> bytes:
    """``NOOP`` padded to :data:`_COMMAND_LINE_MINIMUM` octets with its CRLF: NOOP
    takes an optional string argument (RFC 5321 §4.1.1.9), so the padding is legal
    and the line must get 250."""
    padding = _COMMAND_LINE_MINIMUM - len(b"NOOP \r\n")
    return b"NOOP " + b"x" * padding


def _shortest_limit_taken(probe: Probe, client: WireClient) -> None:
    """A 512-octet command line gets 250, or the check fails: every server MUST
    take command lines that long (RFC 5321 §4.5.3.1), so refusing it is no limit
    of its own to choose.

    The padded NOOP is refused by a server that refuses NOOP's argument, which
    RFC 5321 §4.1.1.9 only says it SHOULD ignore (CPython's smtpd answers 501),
    so a refusal fails the check only when a short ``NOOP x`` is taken. Otherwise
    a HELO padded to the limit is tried (:func:`_helo_at_the_limit`); when that is
    refused too, the minimum goes unjudged and the transcript says why."""
    answer = _ask(client, _noop_at_the_limit())
    if answer.code == 250:
        return
    probe.refused(answer)  # the first command, as EHLO is elsewhere
    control = _ask(client, b"NOOP x")
    if control.code == 250:
        raise _Failed(
            f"a {_COMMAND_LINE_MINIMUM}-octet command line (NOOP, CRLF included) got "
            f"{answer}, not 250, where NOOP x got 250: every server MUST take command "
            f"lines of {_COMMAND_LINE_MINIMUM} octets (RFC 5321 §4.5.3.1, §4.5.3.1.4)"
        )
    if _ask(client, _helo_at_the_limit()).code != 250:
        unjudged(
            client,
            "NOOP with an argument is refused, and so is a HELO padded to "
            f"{_COMMAND_LINE_MINIMUM} octets: the {_COMMAND_LINE_MINIMUM}-octet minimum "
            "cannot be checked this way",
        )


def _helo_at_the_limit() -> bytes:
    """``HELO`` padded to :data:`_COMMAND_LINE_MINIMUM` octets with its CRLF, its
    domain in labels of at most 63 octets (RFC 1035 §2.3.4). The domain is longer
    than the 255 octets of RFC 5321 §4.5.3.1.2, so a refusal proves nothing, but a
    250 shows the line taken; HELO opens no transaction, and a server that refuses
    NOOP's argument (CPython's smtpd) takes it. Sent before any other HELO, as some
    servers refuse a second one."""
    return b"HELO " + _domain_of_octets(_COMMAND_LINE_MINIMUM - len(b"HELO \r\n")).encode()


def _domain_of_octets(octets: int) -> str:
    """An LDH domain of exactly ``octets`` octets, in labels of at most 63."""
    labels = []
    left = octets
    while left > 63:
        labels.append("x" * 62)
        left -= 63
    labels.append("x" * left)
    return ".".join(labels)


def _closed_at_long_line(client: WireClient, first: ServerReply) -> str:
    """The verdict on a long line answered with a reply that ends the session: the
    close must follow (RFC 5321 §3.8), and no other reply, which would answer a
    piece of the line cut off and run as a command."""
    after = client.read_until_closed()
    if after:
        raise _Failed(
            f"the long line got {_show(_codes([first, *after]))}: more than one reply, as "
            "from a server that cut it at its limit and ran the rest as commands"
        )
    if not client.closed:
        raise _Failed(
            f"the long line got {first.code}, but the server did not close the connection "
            f"within {client.timeout:g} s (RFC 5321 §3.8)"
        )
    return f"the 10,000-octet line got {first.code}, then the close (RFC 5321 §3.8)"


def check_text_line_length(probe: Probe) -> str:
    """A long text line never ends a message (RFC 5321 §4.5.3.1.6).

    A message whose longest line is at the limit goes first, on its own
    connection, and must get 250 (:func:`_longest_legal_text_line_taken`).
    Then, on a new connection, each long line ends in a
    dot at the limits servers cut at (512, 1000, 1024, 2048, 4096, 8192
    octets): a server that cut there would read a lone dot and end the
    message, then run the rest as commands.
    """
    _longest_legal_text_line_taken(probe)
    client, _ = probe.hello()
    _data(probe, client)
    lines = [b"x" * cut + b".\r\n" for cut in (510, 512, 998, 1000, 1022, 1024, 2046, 2048)]
    lines += [b"x" * cut + b".\r\n" for cut in (4094, 4096, 8190, 8192)]
    client.send(b"Subject: long lines\r\n\r\n" + b"".join(lines) + b".\r\n" + b"QUIT\r\n")
    replies = client.read_until_closed()
    codes = _codes(replies)
    if not codes:
        raise _Failed(
            "the message of long lines got no reply before the server closed the "
            "connection or fell silent"
        )
    if len(codes) > 2:
        raise _Failed(f"a message of long lines and QUIT got {_show(codes)}: a cut line ended it")
    if not _message_then_quit(codes):
        raise _Failed(f"a message of long lines and QUIT got {codes}, out of order")
    wrong = _session_end(client, replies)
    if wrong:
        raise _Failed(f"a message of long lines and QUIT got {codes}: {wrong}")
    if codes[0] != 250 and codes[0] // 100 != 5:
        raise _Failed(f"the message of long lines was answered {codes[0]}")
    return f"the message of long lines got {codes[0]}"


def _data(probe: Probe, client: WireClient) -> None:
    """MAIL, RCPT and DATA, each alone; anything but 354 to DATA skips the check."""
    probe.transaction(client)
    answer = _ask(client, b"DATA")
    if answer.code != 354:
        raise _Skipped(f"DATA was answered {answer}")


def _longest_legal_text_line_taken(probe: Probe) -> None:
    """A message whose longest line is 998 octets and the CRLF gets 250, or the
    check fails: every server MUST take text lines that long (RFC 5321 §4.5.3.1,
    §4.5.3.1.6), so a refusal is no limit of its own to choose.

    The long line starts with a dot: §4.5.3.1.6 does not count the dot doubled
    for transparency (§4.5.2), so a server must take the 1001 octets on the wire
    and a server that counts the stuffing dot fails. A refusal fails the check
    only when a message of short lines (:func:`_short_lines_taken`) is then
    taken on the same connection: a server that refuses every message to the
    recipient, or for a policy of its own, says nothing of lines, and the
    minimum goes unjudged."""
    client, _ = probe.hello()
    _data(probe, client)
    longest = b"." + b"x" * (_TEXT_LINE_MINIMUM - 3)
    client.send(_headers(probe, "a line at the limit") + b"." + longest + b"\r\n.\r\n")
    answer = client.read_reply()
    if answer is None:
        raise _Failed(
            "the server closed the connection instead of answering a message whose "
            f"longest line is {_TEXT_LINE_MINIMUM - 2} octets and the CRLF"
        )
    if answer.code == 250:
        return
    if not _short_lines_taken(probe, client):
        unjudged(client, "the recipient takes no mail, not even a message of short lines")
        return
    raise _Failed(
        f"a message whose longest line is {_TEXT_LINE_MINIMUM - 2} octets and the "
        f"CRLF got {answer}, not 250, where a message of short lines got 250: every "
        f"server MUST take text lines of {_TEXT_LINE_MINIMUM} octets (RFC 5321 "
        "§4.5.3.1, §4.5.3.1.6)"
    )


def _headers(probe: Probe, subject: str) -> bytes:
    """The header section of a probing message, with the fields a content policy
    asks for (From:, Date:, Message-ID:, RFC 5322 §3.6), so that it refuses the
    message, if at all, for what the check tests."""
    return (
        f"From: <{probe.sender}>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}.check@smtpcore.test>\r\n"
        f"Subject: {subject}\r\n\r\n"
    ).encode()


def _short_lines_taken(probe: Probe, client: WireClient) -> bool:
    """Whether a message of short lines gets 250 on ``client``: MAIL, RCPT and DATA
    again, each alone, then the message. Any refusal or a close is a no."""
    for line, wanted in ((probe.mail_line(), 2), (probe.rcpt_line(), 2), (b"DATA", 3)):
        answer = client.command(line)
        if answer is None or answer.code // 100 != wanted:
            return False
    client.send(_headers(probe, "short lines") + b"a short line\r\n.\r\n")
    answer = client.read_reply()
    return answer is not None and answer.code == 250


def check_recipient_limit(probe: Probe) -> str:
    """100 recipients are taken; the 101st gets 2xx, 452 or 552 (RFC 5321 §4.5.3.1.8, .10).

    The first RCPT goes alone, as in :meth:`Probe.transaction`, and a refusal
    skips the check: a server that refuses the recipient may end the session
    after a few more errors (421, RFC 5321 §3.8), which says nothing of its
    recipient limit.
    """
    client, offered = probe.hello()
    answer = _ask(client, probe.mail_line())
    if answer.code // 100 != 2:
        raise _Skipped(f"MAIL was answered {answer}")
    first = _ask(client, probe.rcpt_line())
    if first.code // 100 != 2:
        raise _Skipped(f"the recipient was refused ({first}): give one the server accepts")
    rcpt = probe.rcpt_line() + b"\r\n"
    if "PIPELINING" in offered:
        client.send(rcpt * 100)
        replies = client.read_replies(100)
    else:
        replies = [r for r in (client.command(rcpt[:-2]) for _ in range(100)) if r]
    codes = _codes([first, *replies])
    after = _quit(client)
    if len(codes) < 101 or len(after) != 1:
        raise _Failed(f"101 RCPTs and QUIT got {len(codes) + len(after)} replies")
    refused = [(n, code) for n, code in enumerate(codes[:100], 1) if code // 100 != 2]
    if refused:
        number, code = refused[0]
        raise _Failed(f"recipient {number} of 100 was refused with {code}")
    if codes[100] // 100 != 2 and codes[100] not in (452, 552):
        raise _Failed(f"the 101st recipient got {codes[100]}, not 452")
    return f"100 recipients taken; the 101st got {codes[100]}"


def _offered_size(offered: Mapping[str, str]) -> int | None:
    """The message size limit EHLO offers (``SIZE n``, RFC 1870 §4), or None where
    there is none: no SIZE, no number, or 0 (no fixed limit)."""
    words = offered.get("SIZE", "").split()
    if not words or not words[0].isascii() or not words[0].isdigit() or int(words[0]) == 0:
        return None
    return int(words[0])


def check_size_limit(probe: Probe) -> str:
    """Beyond the SIZE it offers, a server answers 552 (RFC 1870 §6.1, §6.3).

    ``MAIL ... SIZE=`` one over the limit; then, when the limit is at most
    ``max_size_probe``, a message that is too big: one 552 after its end. A
    plain MAIL goes first (:meth:`Probe.sender_accepted`): a server may apply
    its sender policy before it reads the parameters, and its refusal of the
    sender says nothing of SIZE, so it skips the check.
    """
    client, offered = probe.hello()
    limit = _offered_size(offered)
    if limit is None:
        raise _Skipped("no SIZE limit is offered")
    probe.sender_accepted(client)
    answer = client.command(probe.mail_line(f" SIZE={limit + 1}"))
    if answer is None or answer.code != 552:
        raise _Failed(f"MAIL with SIZE={limit + 1} over the offered {limit} got {answer}")
    _quit(client)
    if limit > probe.max_size_probe:
        return f"SIZE={limit + 1} got 552 (a {limit}-octet message is too big to send)"
    client, _ = probe.hello()
    probe.transaction(client)
    answer = _ask(client, b"DATA")
    if answer.code != 354:
        raise _Skipped(f"DATA was answered {answer}")
    line = b"x" * 78 + b"\r\n"
    client.send(b"Subject: too big\r\n\r\n" + line * (limit // len(line) + 20) + b".\r\n")
    answer = client.read_reply()
    after = _quit(client)
    if answer is None or answer.code != 552 or len(after) != 1:
        raise _Failed(f"a message over {limit} octets got {answer}, then QUIT got {_codes(after)}")
    return "SIZE= over the limit and a message over it both got 552"


_NOT_A_NUMBER: Final = " SIZE=abc"
"""The control of ``ascii-digits``: a SIZE that is no number in any script."""

_ARABIC_INDIC_TEN: Final = " SIZE=\u0661\u0660"
"""Ten in Arabic-Indic digits, which ``int()`` reads: under every limit, so only an
``abc`` control that is refused tells a size read from it (:func:`_size_read_unseen`)."""


@dataclass(frozen=True)
class _DigitLine:
    """A line ``ascii-digits`` sends, and what its answer is judged against."""

    line: bytes
    control: bytes | None = None
    """The same line with ``abc`` for the number: where both are answered alike, the
    server read no number from either (it may ignore a SIZE it cannot read)."""
    number: int | None = None
    """What the digits stand for, when that is over the offered SIZE: a 552 then
    means they were read as a size, as their ASCII twin is."""

    @property
    def text(self) -> str:
        return self.line.decode()


def _arabic_indic(number: int) -> str:
    """``number`` in Arabic-Indic digits (U+0660 to U+0669), which ``int()`` reads."""
    return "".join(chr(0x0660 + int(digit)) for digit in str(number))


def _digit_lines(probe: Probe, offered: Mapping[str, str]) -> list[_DigitLine]:
    """The lines of ``ascii-digits``, each control before the lines judged by it."""
    control = probe.mail_line(_NOT_A_NUMBER)
    lines = [
        _DigitLine(control),
        _DigitLine(probe.mail_line(" SIZE=²"), control),
        _DigitLine(probe.mail_line(_ARABIC_INDIC_TEN), control),
    ]
    limit = _offered_size(offered)
    if limit is not None:
        big = probe.mail_line(f" SIZE={_arabic_indic(limit + 1)}")
        lines.append(_DigitLine(big, control, number=limit + 1))
    if "SMTPUTF8" in offered:  # where non-ASCII is allowed, it still is no digit
        utf8_control = probe.mail_line(" SMTPUTF8" + _NOT_A_NUMBER)
        lines += [
            _DigitLine(utf8_control),
            _DigitLine(probe.mail_line(" SMTPUTF8 SIZE=²"), utf8_control),
        ]
    if "CHUNKING" in offered:
        lines.append(_DigitLine(b"BDAT \xc2\xb2 LAST"))  # the superscript two, no octets after
    return lines


def _digit_problem(
    item: _DigitLine, answer: ServerReply | None, control: ServerReply | None, limit: int | None
) -> str | None:
    """What is wrong with the answer to a line of non-ASCII digits, or None.

    A dropped connection is a crash. A SIZE answered as its ``abc`` control is
    (both 250: the server ignores a SIZE it cannot read) read no number, and
    RFC 1870 wants no 501 there; a 552 to digits over the limit, or a 2xx where
    ``abc`` is refused, means a size was read from them. ``BDAT ²`` must be
    refused, or end the session (421, RFC 5321 §3.8): no one knows where its
    chunk would end.
    """
    if answer is None:
        return f"{item.text!r} was answered by a dropped connection"
    if item.line.startswith(b"BDAT"):
        if answer.code // 100 != 5 and answer.code != 421:
            return f"{item.text!r} was answered {answer}, not a 5xx refusal"
        return None
    if item.control is None:  # a control: any answer is its own
        return None
    if control is not None and answer.code == control.code:
        return None
    if item.number is not None and answer.code == 552:
        return (
            f"{item.text!r} ({item.number}, over the offered SIZE {limit}) was answered "
            f"{answer}, as its ASCII twin is: a size was read from its digits"
        )
    if answer.code // 100 == 2:
        refused = f"{control}" if control is not None else "no reply"
        return (
            f"{item.text!r} was answered {answer}, where {_NOT_A_NUMBER.strip()!r} got "
            f"{refused}: a size was read from its digits"
        )
    if answer.code // 100 != 5:
        return f"{item.text!r} was answered {answer}, not a 5xx refusal"
    return None


def _ignored_like_control(
    lines: Sequence[_DigitLine], answers: Mapping[bytes, ServerReply | None]
) -> list[str]:
    """The SIZE lines accepted just as their ``abc`` control was: leniency, no size."""
    ignored = []
    for item in lines:
        answer = answers.get(item.line)
        control = answers.get(item.control) if item.control else None
        control_text = item.control.decode() if item.control else ""
        if answer and control and answer.code // 100 == 2 and answer.code == control.code:
            ignored.append(f"{item.text!r} got {answer.code} as {control_text!r} did")
    return ignored


def _size_read_unseen(
    probe: Probe, answers: Mapping[bytes, ServerReply | None], limit: int | None
) -> str | None:
    """Why the SIZE lines show nothing, or None. Where ``SIZE=abc`` is accepted (the
    server ignores a SIZE it cannot read) and no limit is offered to go over, a size
    read from Arabic-Indic ten is accepted just as one ignored: the same 250 for a
    server that reads them with ``int()`` and for one that does not."""
    control = probe.mail_line(_NOT_A_NUMBER)
    accepted = answers.get(control)
    ten = answers.get(probe.mail_line(_ARABIC_INDIC_TEN))
    if limit is not None or accepted is None or accepted.code // 100 != 2:
        return None
    if ten is None or ten.code != accepted.code:
        return None
    return (
        f"{control.decode()!r} got {accepted.code} and no SIZE limit is offered, so a "
        "size read from non-ASCII digits would be answered as a SIZE ignored: the check "
        "cannot tell them apart"
    )


def check_ascii_digits(probe: Probe) -> str:
    """Numbers on the wire are ASCII digits (RFC 5234's DIGIT is %x30-39).

    ``SIZE=²`` (a superscript two, which ``str.isdigit()`` accepts and
    ``int()`` does not), ``SIZE=`` ten in Arabic-Indic digits (which
    ``int()`` reads), the limit plus one in Arabic-Indic digits when SIZE is
    offered, ``SMTPUTF8 SIZE=²`` when SMTPUTF8 is and, with CHUNKING,
    ``BDAT ²``: none may be a crash, a dropped connection or a size
    (:func:`_digit_problem`). The SIZE lines are judged against ``SIZE=abc``,
    sent first: a server that answers a non-ASCII number as it answers no
    number at all read none (Exim ignores a SIZE it cannot read), while one
    that answers it as its ASCII twin (552 over the limit, 250 where ``abc``
    is refused) read a size. Where ``abc`` is accepted and no SIZE limit is
    offered, nothing tells the two apart, and the check is skipped
    (:func:`_size_read_unseen`) unless another line fails it. Each line is
    followed by RSET, which must get 250 (RFC 5321 §4.1.1.5) or 421: a server
    that read a size from ``²`` and refused BDAT at once would take RSET's
    first octets for the chunk and answer the rest. Every line is tried, on a
    new connection where the server closed the last one, so that one refusal
    cannot hide a size taken from another line. ``BDAT ²`` goes inside a transaction (MAIL and RCPT
    accepted first, RFC 3030 §2): outside one, a server may refuse BDAT
    before it reads the size at all, which would test nothing; where the
    transaction is refused, the check is skipped rather than passed. So is
    it where a plain MAIL from the sender is refused
    (:meth:`Probe.sender_accepted`): every line would be refused for the
    sender, which would pass for a refusal of its digits.
    """
    client: WireClient | None
    client, offered = probe.hello()
    probe.sender_accepted(client)
    lines = _digit_lines(probe, offered)
    answers: dict[bytes, ServerReply | None] = {}
    problems: list[str] = []
    closed_after = untried = ""
    for index, item in enumerate(lines):
        text, line = item.text, item.line
        if client is None:
            try:
                client, _ = probe.hello()
            except _Refused as exc:
                later = ", ".join(repr(rest.text) for rest in lines[index:])
                untried = f"{later} not tried: {exc}"
                break
        bdat = line.startswith(b"BDAT")
        if bdat:
            try:
                probe.transaction(client)
            except _Skipped as exc:  # as anywhere a transaction is refused: no QUIT
                untried = f"{text!r} was not tried: {exc}"
                client = None
                continue
        answer = answers[line] = client.command(line)
        if answer is None:
            client = None
            continue
        closing = answer.code == 421 and bdat
        after = client.command(b"RSET")
        if after is None and bdat:
            # Closing after a refused BDAT is fine: no one knows where its chunk would end.
            closed_after = f", {text!r} with {answer.code}, then closed"
        elif after is None:
            problems.append(
                f"the server closed the connection instead of answering RSET after {text!r}"
            )
        elif closing:
            problems.append(f"{text!r} was answered {answer}, and the session went on")
        elif after.code not in (250, 421):
            wrong = f"RSET after {text!r} got {after}, not 250 (RFC 5321 §4.1.1.5)"
            if bdat:
                wrong += (
                    ", as from a server that read a size from '²' and took the start of "
                    "RSET for the chunk's octets"
                )
            problems.append(wrong)
        if after is None or after.code == 421:  # a session ended the proper way, §3.8
            client = None
    limit = _offered_size(offered)
    judged = [
        _digit_problem(item, answers[item.line], answers.get(item.control or b""), limit)
        for item in lines
        if item.line in answers
    ]
    problems[:0] = [problem for problem in judged if problem]
    if problems:
        raise _Failed("; ".join(problems))
    if client is not None:
        after_quit = _quit(client)
        if _codes(after_quit) != [221]:
            raise _Failed(f"QUIT after the refusals got {_codes(after_quit)}")
    unseen = _size_read_unseen(probe, answers, limit)
    if unseen:
        raise _Skipped(f"{unseen}; {untried}" if untried else unseen)
    ignored = _ignored_like_control(lines, answers)
    sized = "the SIZE= lines were refused with 5xx"
    if ignored:
        sized = (
            "no size was read from non-ASCII digits: the server ignores a SIZE it cannot "
            f"read ({'; '.join(ignored)})"
        )
    if untried:
        raise _Skipped(f"{sized}, but {untried}")
    if ignored:
        return sized + closed_after
    if closed_after:
        return f"non-ASCII digits were refused{closed_after}"
    return "non-ASCII digits were refused with 5xx"


def check_bdat_octets(probe: Probe) -> str:
    """BDAT is answered only once all its octets are in (RFC 3030 §2).

    ``BDAT 20 LAST`` and 5 octets, then the client closes its side: the
    server never got the chunk, so a 2xx for it is a message accepted
    before it arrived. This session ends with that close, not QUIT; the
    server must close too, since only at its close are all its replies in
    (:func:`_session_end`).
    """
    client, offered = probe.hello()
    if "CHUNKING" not in offered:
        raise _Skipped("CHUNKING is not offered")
    probe.transaction(client)
    client.send(b"BDAT 20 LAST\r\nhello")
    client.shutdown_write()
    replies = client.read_until_closed()
    if any(answer.code // 100 == 2 for answer in replies):
        raise _Failed(
            f"BDAT 20 LAST with 5 of its octets got {_codes(replies)}: answered before "
            "the chunk was in"
        )
    wrong = _session_end(client, replies, by_quit=False)
    if wrong:
        raise _Failed(f"BDAT 20 LAST with 5 of its octets got {_codes(replies)}: {wrong}")
    return f"an unfinished chunk got {_codes(replies) or 'no reply'}"


def check_bdat_bare_lf(probe: Probe) -> str:
    """A bare LF does not hide a BDAT and its chunk (RFC 5321 §2.3.8, RFC 3030 §2).

    ``NOOP<LF>BDAT n LAST<CRLF>``, then n octets holding three ``NOOP``
    marker lines, then ``QUIT``; then the same on a new connection with
    ``RCPT TO:<recipient>`` for ``NOOP``. A reader that ends lines at the
    bare LF (some intermediaries do) passes the octets on as BDAT's chunk.
    The server must agree, or refuse the line and skip the octets, or refuse
    it and close (:func:`_refused_then_closed`): a server that answers the
    markers ran as commands what such a reader took for content, the BDAT
    form of SMTP smuggling. Both lines are tried because a refusal and close
    shows only that the server never read past the command it refused:
    Postfix with ``smtpd_forbid_unauth_pipelining`` refuses a ``NOOP`` with
    more behind it (RFC 2920 §3.1 lets NOOP only end a group), Exim's
    ``drop`` ACL a malformed ``RCPT``; either way the BDAT behind it went
    untested, and the other line tests it.
    """
    client: WireClient | None
    client, offered = probe.hello()
    if "CHUNKING" not in offered:
        raise _Skipped("CHUNKING is not offered")
    summaries: list[str] = []
    problems: list[str] = []
    for lead in (b"NOOP", probe.rcpt_line()):
        try:
            if client is None:
                client, _ = probe.hello()
            probe.transaction(client)
        except _Skipped:
            if not problems:
                raise
            break  # the failure found on the first line stands
        try:
            summaries.append(_bare_lf_bdat(client, lead))
        except _Failed as exc:
            problems.append(str(exc))
        client = None
    if problems:
        raise _Failed("; ".join(problems))
    return "; ".join(summaries)


def _bare_lf_bdat(client: WireClient, lead: bytes) -> str:
    """``lead<LF>BDAT n LAST``, its chunk of markers and QUIT in one write, on a
    client inside a transaction: the summary, or :class:`_Failed` where a marker
    was answered or the session did not end as it should."""
    chunk = _MARKER * 3
    client.send(lead + b"\nBDAT %d LAST\r\n" % len(chunk) + chunk + b"QUIT\r\n")
    replies = client.read_until_closed()
    sent = f"{lead[:4].decode()}<LF>BDAT, its chunk and QUIT got {_show(_codes(replies))}"
    if not replies:
        raise _Failed(f"{sent}: no reply before the server closed or fell silent")
    if len(replies) > 3:  # the lead, BDAT and QUIT at most
        raise _Failed(f"{sent}: the marker lines in the chunk were answered as commands")
    if _refused_then_closed(client, replies):
        return f"{sent}: the line was refused and the session closed"
    wrong = _session_end(client, replies)
    if wrong:
        raise _Failed(f"{sent}: {wrong}")
    return sent


def _refused_then_closed(client: WireClient, replies: Sequence[ServerReply]) -> bool:
    """Whether the server answered what was sent with one refusal and closed: it
    read no further than the line it refused, so nothing behind it ran, and
    nothing behind it was tested either. Postfix does so (554) where a command
    comes pipelined where RFC 2920 §3.1 does not allow it; 421 and 521
    (:data:`_CLOSING`) are such refusals too."""
    return client.closed and len(replies) == 1 and replies[0].code // 100 in (4, 5)


_REFUSED_CHUNK_MARKER: Final = b"NOOP smtpcore-bdat-refused-chunk-marker\r\n"
"""The refused chunk's first line: answered, it shows the chunk's octets read as
commands; delivered, it shows the chunk taken as content."""


def check_bdat_refused_chunk(probe: Probe) -> str:
    """After a BDAT refused, no later chunk completes the message (RFC 3030 §2).

    In a transaction, one write: ``BDAT n`` and a first chunk, a BDAT refused
    and its chunk, ``BDAT n LAST`` and a last chunk, then ``QUIT``. The refused
    line is malformed (``BDAT n LAST junk``, ``BDAT n  LAST``, ``BDAT n FIRST``)
    or, where SIZE offers a limit of at most ``max_size_probe``, a chunk over
    it. After a 4xx or 5xx to any BDAT the transaction has failed: the server
    discards the chunks pipelined behind it, so the last BDAT gets a 4xx or
    5xx (503), or the server closes. A 2xx to it delivers the message with a
    hole where the refused chunk was, and the client, told of the refusal,
    sends it again: smtpcore's own server did so before it failed the
    transaction on a malformed BDAT line. A server that takes the line
    (reads ``FIRST`` as nothing) refused no chunk; the summary says what it
    did. Needs CHUNKING and PIPELINING (unpipelined, the client stops at the
    refusal).
    """
    client: WireClient | None
    client, offered = probe.hello()
    for needed in ("CHUNKING", "PIPELINING"):
        if needed not in offered:
            raise _Skipped(f"{needed} is not offered")
    summaries: list[str] = []
    problems: list[str] = []
    lines = _refused_chunk_lines(probe, offered)
    for index, (line, chunk) in enumerate(lines):
        try:
            if client is None:
                client, _ = probe.hello()
            probe.transaction(client)
            summaries.append(_chunks_around_a_refusal(probe, client, line, chunk))
        except _Skipped as exc:
            if not problems and not summaries:
                raise
            # What the earlier lines found stands; the rest is named, not passed.
            untested = ", ".join(repr(later.decode()) for later, _ in lines[index:])
            (problems or summaries).append(f"(later lines untested: {untested}, as {exc})")
            break
        except _Failed as exc:
            problems.append(str(exc))
        client = None
    if problems:
        raise _Failed("; ".join(problems))
    return "; ".join(summaries)


def _refused_chunk_lines(probe: Probe, offered: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """The BDAT lines to be refused, each with its chunk: three malformed against
    RFC 3030 §2's ``"BDAT" SP chunk-size [SP end-marker]``, and, where SIZE offers a
    limit the probe may send (RFC 1870 §4), a well-formed one whose chunk is over it."""
    chunk = _REFUSED_CHUNK_MARKER
    lines = [
        (b"BDAT %d LAST junk" % len(chunk), chunk),
        (b"BDAT %d  LAST" % len(chunk), chunk),
        (b"BDAT %d FIRST" % len(chunk), chunk),
    ]
    limit = _offered_size(offered)
    if limit is not None and limit <= probe.max_size_probe:
        filler = b"x" * 78 + b"\r\n"
        big = (chunk + filler * (limit // len(filler) + 1))[: limit + 1]
        lines.append((b"BDAT %d" % len(big), big))
    return lines


def _chunks_around_a_refusal(probe: Probe, client: WireClient, line: bytes, chunk: bytes) -> str:
    """``BDAT n`` and a first chunk, ``line`` and ``chunk``, ``BDAT n LAST`` and a
    last chunk, and QUIT, in one write: the summary, or :class:`_Failed` where a
    chunk after a refusal completed the message, the refused chunk's octets were
    answered, or the session did not end as it should."""
    first = _headers(probe, "smtpcore bdat-refused-chunk check") + (
        b"Chunk 1 of 3. Chunk 2 comes with a BDAT line to be refused: delivered\r\n"
        b"without it, this copy has a hole.\r\n"
    )
    last = b"Chunk 3 of 3: do not deliver what follows a refused chunk.\r\n"
    client.send(
        b"BDAT %d\r\n" % len(first)
        + first
        + line
        + b"\r\n"
        + chunk
        + b"BDAT %d LAST\r\n" % len(last)
        + last
        + b"QUIT\r\n"
    )
    replies = client.read_until_closed()
    codes = _codes(replies)
    over = "" if len(chunk) == len(_REFUSED_CHUNK_MARKER) else " (over SIZE)"
    sent = (
        f"BDAT {len(first)}, {line.decode()!r}{over}, BDAT {len(last)} LAST and QUIT got "
        f"{_show(codes)}"
    )
    wrong = _refused_chunk_problem(client, replies)
    if wrong:
        raise _Failed(f"{sent}: {wrong}")
    return f"{sent}: {_refused_chunk_outcome(codes)}"


_CHUNK_READ_AS_COMMANDS: Final = (
    "the refused chunk's octets were read as commands (RFC 3030 §2: a refused BDAT's "
    "chunk is still read as its chunk)"
)


def _refused_chunk_problem(client: WireClient, replies: Sequence[ServerReply]) -> str | None:
    """What is wrong with the replies to the three BDATs and QUIT, or None.

    Replies come in order (RFC 2920 §3.1), so the codes before QUIT's 221 answer
    the BDATs. A 221 shows QUIT was read, and so every BDAT before it: a BDAT
    reply missing then was dropped, not cut off by a close.
    """
    codes = _codes(replies)
    if len(codes) > 4:
        return f"more replies than the three BDATs and QUIT: {_CHUNK_READ_AS_COMMANDS}"
    chunks = list(itertools.takewhile(lambda code: code != 221, codes))[:3]
    refused = next((index for index, code in enumerate(chunks) if code >= 400), None)
    if refused is not None and any(code // 100 == 2 for code in chunks[refused + 1 :]):
        return _accepted_after_refusal(client, codes)
    if refused is not None and client.closed and len(codes) == refused + 1:
        return None  # refused and closed: nothing after the refusal was taken
    if len(chunks) < 3:
        return _unanswered_chunks(3 - len(chunks), quit_answered=221 in codes)
    return _session_end(client, replies)


def _accepted_after_refusal(client: WireClient, codes: Sequence[int]) -> str:
    """Why a 2xx after a refused BDAT fails. Four replies ending in a closing one
    (:data:`_CLOSING`) with no 221 mean the server closed where the last BDAT's
    reply was due (QUIT gets 221, RFC 5321 §4.1.1.10): the 2xx before it answered
    the refused chunk's NOOP marker. Otherwise it answered a later chunk."""
    if len(codes) == 4 and codes[-1] in _CLOSING and client.closed:
        return f"{_CHUNK_READ_AS_COMMANDS}, its NOOP marker answered {codes[2]}"
    return (
        "a chunk after the refused BDAT was accepted, so the message was delivered "
        "with a hole where the refused chunk was, and the client, told of the "
        "refusal, will send it again (RFC 3030 §2: after a 4xx or 5xx to a BDAT the "
        "transaction has failed and later chunks are discarded, 503 expected)"
    )


def _unanswered_chunks(missing: int, *, quit_answered: bool) -> str:
    """BDATs left without a reply; with QUIT answered, their replies were dropped,
    which may hide a message delivered with a hole (RFC 3030 §2: each BDAT gets one
    reply, after its chunk)."""
    what = "the last BDAT" if missing == 1 else f"{missing} of the three BDATs"
    if not quit_answered:
        return f"{what} went unanswered"
    return (
        f"{what} went unanswered, yet QUIT got 221: the server read past it and dropped "
        "its reply, so whether it delivered the message with a hole cannot be told"
    )


def _refused_chunk_outcome(codes: Sequence[int]) -> str:
    """What a server that delivered no hole did, for the summary."""
    chunks = list(itertools.takewhile(lambda code: code != 221, codes))[:3]
    if chunks[0] >= 400:
        raise _Skipped(
            f"the first chunk was refused ({chunks[0]}), so the line after it went "
            "untested: give a recipient the server accepts"
        )
    if chunks[1] >= 400:
        if len(chunks) == 2:
            return "refused, then the session closed"
        return "refused, and the last chunk with it"
    if chunks[2] // 100 == 2:
        return "the line was taken as a chunk: none was refused, the message went whole"
    if chunks[2] == 503:
        return (
            "the line was taken as a chunk that ended the message, so a message of chunks "
            "1-2 was probably delivered while the client got 503 for its real last chunk"
        )
    return f"the line was taken as a chunk, and the message refused at its end ({chunks[2]})"


CHECKS: Final[Mapping[str, Callable[[Probe], str]]] = {
    "chunking": check_chunking,
    "smuggling": check_smuggling,
    "pipelining": check_pipelining,
    "state-order": check_state_order,
    "starttls-injection": check_starttls_injection,
    "command-line-length": check_command_line_length,
    "text-line-length": check_text_line_length,
    "recipient-limit": check_recipient_limit,
    "size-limit": check_size_limit,
    "ascii-digits": check_ascii_digits,
    "bdat-octets": check_bdat_octets,
    "bdat-bare-lf": check_bdat_bare_lf,
    "bdat-refused-chunk": check_bdat_refused_chunk,
}
"""The battery, by name, in the order it runs. Each check returns a summary, or
raises to fail or be skipped; :func:`check_server` runs them."""


def _check_arguments(
    host: str, port: int, timeout: float, pause: float, checks: object, words: Sequence[object]
) -> None:
    """Refuse a host the socket calls cannot take, then ``words``, the helo, sender
    and recipient, that would send commands of the caller's (a CR or LF) or cannot
    be encoded, then what :func:`~smtpcore.testing._battery.check_run_arguments`
    refuses."""
    checked_host(host)
    _check_session_words(*words)
    check_run_arguments(port, timeout, pause, checks)


def check_server(
    host: str,
    port: int,
    *,
    checks: Sequence[str] | None = None,
    helo: str = "check.smtpcore.test",
    sender: str = "check@smtpcore.test",
    recipient: str = "postmaster@smtpcore.test",
    timeout: float = 10.0,
    pause: float = 0.002,
    seed: int = 0,
    tls_context: ssl.SSLContext | None = None,
    max_size_probe: int = 2 << 20,
) -> CheckReport:
    """Run the checks named in ``checks`` (all of :data:`CHECKS` by default) against
    the SMTP server at ``host:port``.

    ``recipient`` must be an address the server accepts (a sink: the checks
    send a few small messages to it). ``timeout`` bounds each wait: for a
    whole reply (one deadline, however slowly its bytes come), a write, the
    TLS handshake, the server closing after ``QUIT``. ``pause`` is slept
    between the pieces of a chunked write; ``seed`` picks the random
    chunkings; ``tls_context`` is used for STARTTLS (by default, one that
    checks no certificate); ``max_size_probe`` is the largest SIZE limit the
    size check sends a whole message over.

    Raises ``ValueError`` for a host name the socket calls cannot take (an
    empty label, as in ``a..b``, or one over 63 octets), a port outside 1 to
    65535, a ``timeout`` that is not a positive number of seconds, an
    unknown check name, a ``helo`` that is not one word, or a ``sender`` or
    ``recipient`` that is no mailbox (a CR, LF, NUL or lone surrogate in any
    of them; the sender may be empty, the null path, and the recipient
    ``Postmaster`` in any letter case with no domain, RFC 5321 §4.1.1.3);
    ``TypeError`` when ``checks`` is one str rather than a list of names;
    :class:`ServerUnreachable` when the run's first connection fails (a
    refused connection, a host that does not resolve): a server that cannot
    be reached fails no check. A connection that fails later fails its check.
    A connection the server refuses with a 421 or 554 greeting or a 421 to EHLO
    (busy, or a connection rate limit, RFC 5321 §3.8, §3.1), the run's first
    included, skips its check (:meth:`Probe.connect`).
    """
    _check_arguments(host, port, timeout, pause, checks, (helo, sender, recipient))
    names = selected(CHECKS, checks)
    results: list[CheckResult] = []
    for name in names:
        probe = Probe(
            host,
            port,
            helo=helo,
            sender=sender,
            recipient=recipient,
            timeout=timeout,
            pause=pause,
            seed=seed,
            tls_context=tls_context,
            max_size_probe=max_size_probe,
        )
        results.append(run_one(name, CHECKS[name], probe, first=not results))
    return CheckReport(host_port(host, port), tuple(results))


@contextlib.contextmanager
def serving(handler: Handler, **server_options: Any) -> Iterator[tuple[str, int]]:
    """Serve ``handler`` with :class:`smtpcore.asyncio.SMTPServer` on a loopback port,
    from a thread with its own event loop, for the block; yields (host, port)."""
    import asyncio

    from smtpcore.asyncio import SMTPServer

    server_options.setdefault("hostname", "check.smtpcore.test")
    started: list[tuple[str, int]] = []
    failure: list[BaseException] = []
    ready = threading.Event()
    loop_box: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def main() -> None:
        stop = asyncio.Event()
        async with SMTPServer(handler, "127.0.0.1", 0, **server_options) as server:
            loop_box.append((asyncio.get_running_loop(), stop))
            started.append(("127.0.0.1", server.port))
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            failure.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="smtpcore-check-server", daemon=True)
    thread.start()
    ready.wait()
    if not started:
        thread.join()
        raise RuntimeError("the handler's server did not start") from (
            failure[0] if failure else None
        )
    try:
        yield started[0]
    finally:
        loop, stop = loop_box[0]
        loop.call_soon_threadsafe(stop.set)
        thread.join()


def check_handler(
    handler: Handler, *, server_options: Mapping[str, Any] | None = None, **options: Any
) -> CheckReport:
    """Serve ``handler`` in-process (asyncio, loopback) and run :func:`check_server` on it.

    ``server_options`` go to :class:`smtpcore.asyncio.SMTPServer` (for
    example ``ssl_context`` to offer STARTTLS); ``options`` to
    :func:`check_server`.
    """
    with serving(handler, **dict(server_options or {})) as (host, port):
        report = check_server(host, port, **options)
    where = host_port(host, port)
    return CheckReport(f"handler {type(handler).__name__} at {where}", report.results)
