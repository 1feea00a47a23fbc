"""Check any POP3 server, in any language, for the bugs that split two readers of a session.

:func:`check_pop3_server` connects to a host and port, logs in as the user
given, and runs a battery of checks (:data:`POP3_CHECKS`) over real sockets,
each on fresh connections. It returns a
:class:`~smtpcore.testing.check.CheckReport`, as the SMTP battery does: every
check passed, failed or skipped (an extension the server does not offer, or
no message to work on), and every failure carries its transcript, byte for
byte.

The checks never lose the user's mail. A session that sent ``RETR``,
``TOP`` or ``DELE`` (or a line a server might read as one) never sends
``QUIT``: it ends with ``RSET`` and ``NOOP`` and the connection closed
without ``QUIT``, and a server deletes nothing then (RFC 1939 §6), not even
what a delete-after-download policy would. Only sessions that touched no
message end with ``QUIT``: logins, ``CAPA``, ``UIDL``, ``LIST``, ``STAT``,
``STLS`` and the long ``USER`` lines (see
:mod:`~smtpcore.testing._pop3_probe`). Either way a response the server owes
no one (a command read from inside a line, a message or a TLS handshake) is
counted, not missed.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from smtpcore import pop3
from smtpcore._errors import RemoteProtocolError
from smtpcore._ip import host_port
from smtpcore._secret import SECRET, secret_repr
from smtpcore.testing._battery import (
    CheckReport,
    CheckResult,
    Failed,
    Outcome,
    ServerUnreachable,
    Skipped,
    check_run_arguments,
    insecure_context,
    run_one,
    selected,
    unjudged,
)
from smtpcore.testing._delivery import MARKER_FIELD, Delivery, checked_recipient
from smtpcore.testing._pop3_deletion import delete_delivered, failed_deletion_note
from smtpcore.testing._pop3_delivered import MAX_WAIT, check_delivered_intact
from smtpcore.testing._pop3_probe import (
    HIDDEN,
    QUIT_BEFORE_LOGIN_RULE,
    QUIT_UNMARKED_RULE,
    POP3Probe,
    POP3Response,
    POP3Wire,
    ask,
    ask_login,
    has_multi_line_response,
    lines_of,
    mail_needed,
    read_response,
)
from smtpcore.testing._wire import WireClient, checked_host

__all__ = ["POP3_CHECKS", "ServerUnreachable", "check_pop3_server"]


# -- number-edges ------------------------------------------------------------------------

_NOT_NUMBERS: Final = (
    "0",
    "-1",
    "+1",
    "1.5",
    "1e0",
    str(2**32 + 1),
    str(2**64 + 1),
    "\u0661",  # Arabic-Indic one
    "\uff11",  # fullwidth one
)
"""Message numbers a server must refuse. Not ``01``: RFC 1939 gives a message number
no grammar but decimal digits, and leading zeros are digits, so ``01`` names message 1."""

_NOT_SEPARATED: Final = (b"RETR\t1", b"LIST\t1", b"RETR\xc2\xa01", b"TOP 1\t0")
"""A tab or a no-break space where RFC 1939 §3 has one SPACE between words."""

_OVER_LONG_NUMBER: Final = b"RETR 1" + b"0" * 999
"""A thousand digits: a line over 255 octets too, so closing at it is allowed."""


def _edge_lines() -> list[bytes]:
    """The lines ``number-edges`` sends, the DELE lines last (they are undone after)."""
    lines = []
    for text in _NOT_NUMBERS:
        number = text.encode()
        lines += [b"RETR " + number, b"LIST " + number, b"TOP " + number + b" 0"]
        lines.append(b"UIDL " + number)
    lines += [b"TOP 1 -1", b"TOP 1 +0", b"TOP 1 \xd9\xa0", *_NOT_SEPARATED, _OVER_LONG_NUMBER]
    lines += [b"DELE " + text.encode() for text in _NOT_NUMBERS] + [b"DELE\t1"]
    return lines


class _Sessions:
    """Sessions for a check that sends many refused lines: a server may end a session
    after too many (Dovecot after 20, smtpcore after 10), so a close where an answer
    was due is tried again once on a new session before it counts. ``logged_in``
    says which state each new session starts in."""

    def __init__(self, probe: POP3Probe, *, logged_in: bool = True) -> None:
        self.probe = probe
        self.logged_in = logged_in
        self.client: POP3Wire | None = None

    def current(self) -> POP3Wire:
        if self.client is not None and (self.client.closed or self.client.write_failed):
            self.client.close()  # the server sees the end of the session it ended
            self.client = None
        if self.client is None:
            self.client = self.probe.session() if self.logged_in else self.probe.connect()
        return self.client

    def answer(
        self, line: bytes, secret: bytes = b"", *, may_close: bool = False
    ) -> POP3Response | None:
        """The status line answering ``line`` (then ``secret``, written as the user's
        credential, :meth:`POP3Wire.send_login`), or None where two sessions closed
        at it.

        Where the session closed at ``line`` and no new one opens to try it again (a
        ``-ERR`` greeting, a refused login), the check stops with that skip, and the
        close is recorded first as the problem it is (:attr:`POP3Probe.problems`):
        a session that dies where a response was due is a crash on the line, which
        a server restarting, or at its limit of connections after it, must not
        hide. Not so where the server ``may_close`` at ``line``."""
        for attempt in range(2):
            try:
                client = self.current()
            except Skipped:
                if attempt and not may_close:
                    self.probe.problems.append(
                        f"{_shown_login(line, secret)!r} was answered by closing the "
                        "connection, and no new session opened to try it again"
                    )
                raise
            if secret:
                client.send_login(line, secret)
            else:
                client.send(line + b"\r\n")  # classified: it may touch a message
            answer = read_response(client, multi_line=False)
            if answer is not None:
                if answer.err and client.unread:
                    _closing_notice(self.probe, client, _shown_login(line, secret))
                return answer
        return None

    def expect_err(self, lines: Sequence[bytes], where: str) -> None:
        """Each of ``lines``, out of its state, must get -ERR (:meth:`expect_err_one`)."""
        for line in lines:
            self.expect_err_one(line, where)

    def expect_err_one(self, line: bytes, where: str, secret: bytes = b"") -> None:
        """``line`` (then ``secret``), out of its state, must get -ERR; what is wrong
        is recorded in :attr:`POP3Probe.problems`, with :data:`HIDDEN` for ``secret``."""
        answer = self.answer(line, secret)
        shown = _shown_login(line, secret).decode("utf-8", "replace")
        if answer is None:
            self.probe.problems.append(f"{shown} {where} was answered by closing, twice")
        elif not answer.err:
            self.drop()
            self.probe.problems.append(f"{shown} {where} got {answer}, not -ERR")

    def drop(self) -> None:
        """Give up the session: what it was asked may have left it out of step."""
        if self.client is not None:
            self.probe.abandon(self.client)
            self.client = None


def _shown_login(line: bytes, secret: bytes) -> bytes:
    """``line`` then ``secret`` as a result shows them: :data:`HIDDEN` for ``secret``."""
    return line + HIDDEN if secret else line


def _closing_notice(probe: POP3Probe, client: WireClient, line: bytes) -> None:
    """More than one line came for ``line`` answered -ERR: fine where the server
    then closes (Dovecot says ``-ERR Too many invalid bad commands.`` after the
    refusal that reached its limit, and closes), a surplus response otherwise: the
    lines after the -ERR, or the part of one that came with no line end."""
    extra = client.read_lines_until_closed()
    if client.closed:
        return
    if not extra:
        raise Failed(
            f"{line!r} got -ERR and then part of a line, never ended, and no close within "
            f"{client.timeout:g} s: one command, the start of a second response"
        )
    raise Failed(
        f"{line!r} got -ERR and then {probe.lines_said(extra)}, and the server went on: one "
        "command, two responses"
    )


def _edge_problem(line: bytes, answer: POP3Response | None) -> str | None:
    if answer is None:
        if line == _OVER_LONG_NUMBER:
            return None  # a line over the limit may be refused by closing (RFC 2449 §4)
        return f"{line!r} was answered by closing the connection, twice"
    if answer.err:
        return None
    return f"{line!r} got {answer}, not -ERR"


def check_number_edges(probe: POP3Probe) -> str:
    """Only a message number in ASCII digits names a message (RFC 1939 §3, §5).

    ``0``, ``-1``, ``+1``, ``1.5``, ``1e0``, 2**32+1 and 2**64+1 (which wrap to
    1 in a fixed-size integer), Arabic-Indic and fullwidth one (which Python's
    ``int()`` reads), a thousand digits, ``TOP 1 -1``, ``TOP 1 +0``, and a tab
    or a no-break space for the SPACE, with RETR, LIST, TOP, UIDL and DELE:
    each must get ``-ERR``, never content or ``+OK`` (a server that parses
    with ``atoi``, ``strtoul`` or ``int()`` hands out message 1, or deletes
    it). Then NOOP gets ``+OK`` and LIST is whole: no refused DELE marked a
    message. RETR 1 and LIST 1 go first, as the control: a server that takes
    them refuses the edges for what they are. Problems found before a login or
    a connection refused on a later session still fail the check, and so does a
    session closed at a line where no new one opens to try it again.
    """
    sessions = _Sessions(probe)
    client = sessions.current()
    before = probe.listing(client)
    mail_needed(before)
    first = min(before)
    for control in (b"RETR %d" % first, b"LIST %d" % first):
        answer = ask(client, control)
        if not answer.ok:
            raise Failed(f"{control!r} got {answer}, though LIST lists message {first}")
    edges = _edge_lines()
    problems = probe.problems
    for line in edges:
        problem = _edge_problem(line, sessions.answer(line, may_close=line == _OVER_LONG_NUMBER))
        if problem:
            problems.append(problem)
            sessions.drop()
    client = sessions.current()
    noop = ask(client, b"NOOP")
    after = probe.listing(client)
    if not noop.ok:
        problems.append(f"NOOP after the refusals got {noop}, not +OK")
    if after != before:
        problems.append(
            f"after the refusals LIST gave {after}, not {before}: a message was marked"
        )
    probe.restore(client, before)
    if problems:
        raise Failed("; ".join(problems))
    probe.end(client)
    return f"{len(edges)} malformed numbers and separators got -ERR; nothing was marked deleted"


# -- stls-injection ----------------------------------------------------------------------


def check_stls_injection(probe: POP3Probe) -> str:
    """Nothing pipelined behind STLS is run, before the handshake or after (RFC 2595 §4).

    ``STLS`` and ``CAPA`` go in one plaintext write; after the handshake
    ``QUIT`` must get the only response, ``+OK``, then the close. A server
    that kept the plaintext it had read runs the injected CAPA over TLS (the
    POP3 twin of CVE-2011-0411, found in several POP3 servers in 2011); one
    that answers it in plaintext before TLS makes the handshake fail on bytes
    that are no TLS record, and fails too; so does a handshake that stalls. A
    handshake the server ended, by a close, a reset or a TLS alert (a record,
    RFC 8446 §6), passes, if a clean STLS works.
    """
    context = probe.tls_context or insecure_context()
    client = probe.connect()
    offered = probe.capabilities(client) or set()
    if "STLS" not in offered:
        raise Skipped("STLS is not offered in CAPA")
    client.send(b"STLS\r\nCAPA\r\n")
    answer = read_response(client, multi_line=False)
    if answer is None:
        raise Failed("the server closed the connection instead of answering STLS")
    if not answer.ok:
        raise Skipped(f"STLS was answered {answer}")
    if client.unread:
        raise Failed(f"the server answered in plaintext after its +OK: {client.unread!r}")
    try:
        client.start_tls(context)
    except (OSError, ssl.SSLError) as exc:
        return _injected_handshake_failed(probe, context, exc)
    client.send(b"QUIT\r\n")
    lines = client.read_lines_until_closed()
    if not lines:
        raise Failed(
            "over TLS, QUIT got no response before the server closed the connection or "
            f"fell silent for {client.timeout:g} s"
        )
    if len(lines) != 1 or not lines[0].startswith(b"+OK"):
        raise Failed(
            f"over TLS, QUIT got {probe.lines_said(lines)}: the CAPA pipelined in plaintext "
            "behind STLS was run after the handshake (RFC 2595 §4)"
        )
    if not client.closed:
        raise Failed(f"the server did not close within {client.timeout:g} s of QUIT")
    return "the plaintext behind STLS was dropped"


_CLOSED_AT_HANDSHAKE: Final = (
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)
"""How a handshake fails when the server ends the session: a close or a reset."""

_ALERT_REASON: Final = re.compile(r"(?:\A|_)ALERT_")
"""OpenSSL's reason for a handshake ended by the peer's alert record:
``SSLV3_ALERT_UNEXPECTED_MESSAGE``, ``TLSV1_ALERT_INTERNAL_ERROR``, ..."""

_NO_TLS_RECORD_REASONS: Final = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "HTTP_REQUEST",
        "HTTPS_PROXY_REQUEST",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
        "UNKNOWN_PROTOCOL",
        "RECORD_LENGTH_MISMATCH",
    }
)
"""OpenSSL's reasons for bytes that do not parse as a TLS record (RFC 8446 §5.1): a
line of plaintext read as a record header gives ``WRONG_VERSION_NUMBER`` (its
second and third octets are no version) or ``PACKET_LENGTH_TOO_LONG``."""


def _ended_by_server(exc: BaseException) -> bool:
    """Whether the server ended the handshake, by a close, a reset or a TLS alert
    (a TLS record, RFC 8446 §6): no sign it answered the injected command."""
    if isinstance(exc, _CLOSED_AT_HANDSHAKE):
        return True
    reason = getattr(exc, "reason", None) if isinstance(exc, ssl.SSLError) else None
    return isinstance(reason, str) and _ALERT_REASON.search(reason) is not None


def _injected_handshake_failed(
    probe: POP3Probe, context: ssl.SSLContext, exc: BaseException
) -> str:
    """The verdict on a failed handshake after STLS with CAPA behind it, by what was
    received; each failure is judged only where a clean STLS works."""
    if _ended_by_server(exc):
        return _ended_at_handshake(probe, context, exc)
    _clean_handshake_works(probe, context)
    if isinstance(exc, TimeoutError):
        raise Failed(
            f"after STLS with CAPA behind it, the TLS handshake did not end within "
            f"{probe.timeout:g} s where a clean STLS works: the server neither answered "
            "the ClientHello nor closed (RFC 2595 §4)"
        ) from None
    if getattr(exc, "reason", None) in _NO_TLS_RECORD_REASONS:
        raise Failed(
            f"after STLS with CAPA behind it, the TLS handshake failed ({exc}) where a "
            "clean STLS works: the server sent bytes that are no TLS record, as a "
            "plaintext answer to the injected CAPA is (RFC 2595 §4)"
        ) from None
    raise Failed(
        f"after STLS with CAPA behind it, the TLS handshake failed ({exc}) where a "
        "clean STLS works (RFC 2595 §4)"
    ) from None


def _ended_at_handshake(probe: POP3Probe, context: ssl.SSLContext, exc: BaseException) -> str:
    """Fine where the server ended the injected session at the handshake, if a clean
    STLS works; skipped where TLS does not work at all."""
    _clean_handshake_works(probe, context)
    return f"the server ended the injected session at the handshake ({exc})"


def _clean_handshake_works(probe: POP3Probe, context: ssl.SSLContext) -> None:
    """A new session's STLS, alone, and its handshake; skips the check if they fail."""
    probe.close()
    clean = probe.connect()
    if not ask(clean, b"STLS").ok:
        raise Skipped("a clean STLS is refused too") from None
    try:
        clean.start_tls(context)
    except (OSError, ssl.SSLError) as clean_exc:
        raise Skipped(f"the TLS handshake fails even without injection: {clean_exc}") from None


# -- command-line-length -------------------------------------------------------------------

_COMMAND_LINE_MINIMUM: Final = 255
"""The command line a server with CAPA must take, CRLF included (RFC 2449 §4)."""

_CUTS: Final = (255, 512, 1024, 2048, 4096, 8192)


def _long_user_line() -> bytes:
    """A 10,000-octet USER line with ``NOOP`` at each offset where servers cut lines:
    a server that cut there and read on would run a NOOP from inside the line."""
    line = bytearray(b"USER " + b"x" * 9995)
    for cut in _CUTS:
        line[cut : cut + 5] = b"NOOP "
    return bytes(line)


def _longest_line_taken(probe: POP3Probe) -> str:
    """A 255-octet USER line gets the status an 8-octet one gets, or the check fails.

    USER is the command that takes a long argument before login and touches no
    mail (NOOP takes none in POP3, RFC 1939 §5); a user name of 250 octets is
    allowed by RFC 2449 §4. Where the short name is refused (a server that
    says at USER whether the user exists), a refused long one proves nothing,
    and the minimum goes unjudged: the transcript says so.
    """
    answers = []
    for octets in (8, _COMMAND_LINE_MINIMUM - len(b"USER \r\n")):
        client = probe.connect()
        answers.append(ask(client, b"USER " + b"x" * octets))
        probe.end(client)
    short, long = answers
    if not short.ok:
        why = (
            f"an 8-octet USER got {short}, so a refused {_COMMAND_LINE_MINIMUM}-octet one "
            "proves nothing"
        )
        unjudged(client, why)
        return f"the {_COMMAND_LINE_MINIMUM}-octet minimum was not judged ({why})"
    if not long.ok:
        raise Failed(
            f"a {_COMMAND_LINE_MINIMUM}-octet USER line (CRLF included) got {long}, where "
            f"an 8-octet user name got {short}: a server with CAPA MUST take command lines "
            f"of {_COMMAND_LINE_MINIMUM} octets (RFC 2449 §4)"
        )
    return f"the {_COMMAND_LINE_MINIMUM}-octet USER line got {long}"


def _long_line_answers(probe: POP3Probe, client: POP3Wire, *, logged_in: bool) -> str | None:
    """The long line, NOOP and QUIT in one write, read to the close; what is wrong, or
    None. A server answers in order, one status line a command (none of the three
    has a multi-line response, RFC 1939 §3), so three lines are read as the long
    line's, NOOP's and QUIT's, each judged as what its command gets
    (:func:`_unlike_their_commands`); fewer than two are the long line's answer (or
    none) and the close, which a server may choose over reading on; more are
    responses to pieces of the line run as commands."""
    client.send(_long_user_line() + b"\r\nNOOP\r\nQUIT\r\n")
    lines = client.read_lines_until_closed()
    if not client.closed:
        got = f"after {probe.lines_said(lines)}" if lines else "with nothing answered"
        return f"the server did not close within {client.timeout:g} s of QUIT, {got}"
    if len(lines) <= 1:
        return None
    got = f"a 10,000-octet line, NOOP and QUIT got {probe.lines_said(lines)}"
    if len(lines) != 3:
        return f"{got}: a piece of the long line was run as a command"
    wrong = _unlike_their_commands(lines, logged_in=logged_in)
    return f"{got}: {wrong}" if wrong else None


def _unlike_their_commands(lines: Sequence[bytes], *, logged_in: bool) -> str | None:
    """Which of three lines, read as the long line's, NOOP's and QUIT's responses, is
    not what its command gets, and the two readings left: a piece of the long line
    run as a command answered in its place, or the command answered wrong. The
    long line gets a status line (``-ERR``, or ``+OK`` from a server that takes a
    long USER); NOOP ``+OK`` once logged in (§5), and before login either (RFC 1939
    lists it in no state but TRANSACTION, and ``state-order`` leaves it out); QUIT,
    on a session that marked nothing, ``+OK`` alone (§4, §6)."""
    status = (b"+OK", b"-ERR")
    if not lines[0].startswith(status):
        return "the first, the long line's, is no status line (RFC 1939 §3)"
    if not lines[1].startswith(b"+OK" if logged_in else status):
        return (
            "the second is no +OK: a piece of the long line was run as a command, or NOOP "
            "was refused (RFC 1939 §5: NOOP after login gets +OK)"
        )
    if not lines[2].startswith(b"+OK"):
        rule = QUIT_UNMARKED_RULE if logged_in else QUIT_BEFORE_LOGIN_RULE
        return (
            "the third is no +OK: a piece of the long line was run as a command, or QUIT "
            f"was refused ({rule})"
        )
    return None


def check_command_line_length(probe: POP3Probe) -> str:
    """An over-long command line is one line: one ``-ERR``, or the close (RFC 2449 §4).

    First the minimum (:func:`_longest_line_taken`). Then a 10,000-octet
    line with ``NOOP`` at 255, 512, 1024, 2048, 4096 and 8192 octets, a
    command and ``QUIT`` in one write, before login and again after: a server
    that cuts lines at a buffer's size and reads the rest as the next command
    answers too often (the class of bug of Qpopper's and Dovecot's early line
    readers, and of any ``fgets`` into a fixed buffer).
    """
    minimum = _longest_line_taken(probe)
    problems = probe.problems  # a session refused after a problem found keeps it
    before_login = _long_line_answers(probe, probe.connect(), logged_in=False)
    if before_login:
        problems.append(f"before login, {before_login}")
    after_login = _long_line_answers(probe, probe.session(), logged_in=True)
    if after_login:
        problems.append(f"after login, {after_login}")
    if problems:
        raise Failed("; ".join(problems))
    return f"{minimum}; a 10,000-octet line was one line, before login and after"


# -- dot-stuffing --------------------------------------------------------------------------

MAX_MESSAGES: Final = 20
"""The messages ``dot-stuffing`` reads at most, from the first."""
MAX_MESSAGE_OCTETS: Final = 1 << 20
"""Larger messages (by LIST) are not read: the transcript keeps every octet."""
_SESSION_BUDGET: Final = 6 << 20


_BARE_LF: Final = re.compile(rb"(?<!\r)\n")
_UNDOUBLED_DOT: Final = re.compile(rb"^\.(?!\.)", re.MULTILINE)
_STUFFED_LINE: Final = re.compile(rb"^\.\.", re.MULTILINE)
_ADDED_LINE_END: Final = 2
"""Octets a server may add to a message: the CRLF that ends a last line that had
none, before the terminating dot (RFC 1939 §3); LIST counts the message as stored."""


def _framing_problem(probe: POP3Probe, what: str, answer: POP3Response) -> str | None:
    """What is wrong with how a multi-line response is framed (RFC 1939 §3), or None.
    The line that shows it is quoted by :meth:`POP3Probe.line_said`, the password
    hidden before the cut: the end of a line that ends in a bare LF, the start of one
    whose dot is not doubled."""
    body = answer.body
    if bare := _BARE_LF.search(body):
        line = body.count(b"\n", 0, bare.start()) + 1
        start = body.rfind(b"\n", 0, bare.start()) + 1
        shown = probe.line_said(body[start : bare.end()], tail=True)
        return f"line {line} of {what} ends in a bare LF: {shown}"
    if dot := _UNDOUBLED_DOT.search(body):
        line = body.count(b"\n", 0, dot.start()) + 1
        end = body.find(b"\n", dot.start()) + 1 or len(body)
        shown = probe.line_said(body[dot.start() : end])
        return f"line {line} of {what} starts with a dot not doubled: {shown}"
    return None


def _top_expected(content: bytes, lines: int) -> bytes | None:
    """What ``TOP n lines`` must give: the header, the blank line, ``lines`` body lines
    (RFC 1939 §7); None where the message has no blank line to count from."""
    end = content.find(b"\r\n\r\n")
    if content.startswith(b"\r\n"):
        end = -2
    elif end < 0:
        return None
    body = lines_of(content[end + 4 :])
    return content[: end + 4] + b"".join(body[:lines])


def _top_counts(content: bytes) -> list[int]:
    """The line counts TOP is asked for: 0, 1, and every body line, so that the
    stuffing of each body line is checked in TOP too."""
    end = content.find(b"\r\n\r\n")
    body_lines = content.count(b"\n", end + 4) if end >= 0 else 0
    return sorted({0, 1, body_lines})


def _size_problem(number: int, content: bytes, size: int) -> str | None:
    if len(content) in (size, size + _ADDED_LINE_END) and (
        len(content) == size or content.endswith(b"\r\n")
    ):
        return None
    return (
        f"RETR {number} gave {len(content)} octets where LIST says {size} (RFC 1939 §5: "
        "the exact size; §11: counted with CRLF line ends; §3: a CRLF added after a "
        "last line without one is the only difference allowed)"
    )


class _Seen:
    """What ``dot-stuffing`` saw that decides what it could judge."""

    def __init__(self) -> None:
        self.stuffed_lines = False
        self.added_line_ends = 0


def _message_problems(
    probe: POP3Probe, client: WireClient, number: int, size: int, top: bool, seen: _Seen
) -> list[str]:
    answer = ask(client, b"RETR %d" % number)
    if not answer.ok:
        return [f"RETR {number} got {answer}, though LIST lists it"]
    framing = _framing_problem(probe, f"RETR {number}", answer)
    if framing:
        return [framing]
    content = answer.content()
    size_problem = _size_problem(number, content, size)
    if size_problem:  # or the response ended early: what follows is out of step
        return [size_problem]
    seen.stuffed_lines = seen.stuffed_lines or bool(_STUFFED_LINE.search(answer.body))
    seen.added_line_ends += len(content) != size
    problems = []
    for lines in _top_counts(content) if top else ():
        expected = _top_expected(content, lines)
        got = ask(client, b"TOP %d %d" % (number, lines))
        if expected is not None and (not got.ok or got.content() != expected):
            problems.append(
                f"TOP {number} {lines} gave {got} and {len(got.content())} octets, not "
                f"RETR's header, blank line and {lines} body lines ({len(expected)} octets, "
                "stuffed as RETR's)"
            )
    return problems


def check_dot_stuffing(probe: POP3Probe) -> str:
    """Every message comes framed and stuffed right, at the size LIST gives (RFC 1939 §3).

    RETR of each message (the first :data:`MAX_MESSAGES` of at most
    :data:`MAX_MESSAGE_OCTETS`): every line ends in CRLF, every line that
    starts with a dot has it doubled, so no line of the message ends the
    response early (a server that forgets, as some did with a message line
    that is a lone dot, has its client read the rest as responses); after
    unstuffing the octets are as many as LIST says, which RFC 1939 §5 calls
    the exact size (§11 says how a server counts it), or two more where the
    server ended a last line that had no line end with CRLF (§3), so any
    other mismatch fails; ``TOP n 0``, ``TOP n 1`` and TOP of every body line
    give RETR's header, the blank line and as many body lines, stuffed as
    RETR's (where TOP is offered). Where no line starting with a dot was
    seen, the stuffing goes unjudged, and the summary says so. Each session
    ends with RSET and a NOOP that must get the only response left: the rest
    of a message that ended early shows up there.
    """
    client = probe.session()
    offered = probe.capabilities(client)
    top = offered is None or "TOP" in offered
    listing = probe.listing(client)
    mail_needed(listing)
    read = [(n, s) for n, s in sorted(listing.items()) if s <= MAX_MESSAGE_OCTETS][:MAX_MESSAGES]
    seen = _Seen()
    for number, size in read:
        if client.received + 4 * size > _SESSION_BUDGET:
            probe.end(client)
            client = probe.session()
        problems = _message_problems(probe, client, number, size, top, seen)
        if problems:  # what follows may be the rest of the message: the transcript shows it
            raise Failed("; ".join(problems))
    probe.end(client)
    return _dot_stuffing_summary(client, len(read), len(listing) - len(read), seen)


def _dot_stuffing_summary(client: WireClient, read: int, left: int, seen: _Seen) -> str:
    summary = f"{read} messages framed and sized right"
    if seen.stuffed_lines:
        summary = f"{read} messages framed, stuffed and sized right"
    else:
        why = "no line starting with a dot was seen, so the stuffing was not judged"
        unjudged(client, why)
        summary += f"; {why}"
    if seen.added_line_ends:
        summary += (
            f"; {seen.added_line_ends} with a CRLF added after a last line without one "
            "(RFC 1939 §3)"
        )
    if left:
        summary += f" ({left} not read: too many or over {MAX_MESSAGE_OCTETS} octets)"
    return summary


# -- state-order ---------------------------------------------------------------------------

_TRANSACTION_ONLY: Final = (b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"UIDL", b"TOP 1 0", b"RSET")


def check_state_order(probe: POP3Probe) -> str:
    """Each command only in its state (RFC 1939 §3, §4, §7).

    Before login, STAT, LIST, RETR, DELE, UIDL, TOP, RSET and ``PASS``
    without ``USER`` get ``-ERR`` (a server that serves mail before the
    password, or takes a PASS alone, logs in whoever asks). After a wrong
    PASS, STAT still gets ``-ERR`` (the failed login let nobody in), unless
    the server closed after the refusal, which it may. Once logged in, USER,
    PASS and APOP get ``-ERR``. It runs last: a wrong password slows down a
    server's later logins (Dovecot's auth penalty).
    """
    problems = probe.problems
    before_login = _Sessions(probe, logged_in=False)
    before_login.expect_err(_TRANSACTION_ONLY, "before login")
    before_login.expect_err_one(b"PASS ", "without USER", probe.password.encode())
    before_login.drop()
    logged_in = _Sessions(probe)
    apop = b"APOP " + probe.user.encode() + b" " + b"0" * 32
    logged_in.expect_err([b"USER " + probe.user.encode(), b"PASS x", apop], "after login")
    client = logged_in.current()
    stat = ask(client, b"STAT")
    if not stat.ok:
        problems.append(f"STAT after the refusals got {stat}: the session did not go on")
    probe.end(client)
    problems += _wrong_password(probe)  # last: a server may slow down logins after it
    if problems:
        raise Failed("; ".join(problems))
    return "every command out of its state got -ERR, and the session went on"


def _wrong_password(probe: POP3Probe) -> list[str]:
    """A wrong PASS lets nobody in: STAT after it gets -ERR (or the server closed,
    which it may after a failed login), and QUIT ends the session. The right
    password is not tried after it: Dovecot delays a login after a failed one."""
    client = probe.connect()
    user = ask(client, b"USER " + probe.user.encode())
    if not user.ok:
        raise Skipped(f"USER was answered {user}: the server may take only SASL")
    wrong = ask_login(client, b"PASS ", probe.wrong_password())
    if not wrong.err:
        probe.abandon(client)
        return [f"a wrong password got {wrong}, not -ERR"]
    client.send(b"STAT\r\n")
    stat = read_response(client, multi_line=False)
    if stat is None:
        return []  # a server may close after a failed login
    if not stat.err:
        probe.abandon(client)
        return [f"STAT after a wrong PASS got {stat}, not -ERR"]
    probe.end(client)
    return []


# -- deletion ------------------------------------------------------------------------------


def _stat(client: WireClient) -> tuple[int, int]:
    answer = ask(client, b"STAT")
    words = answer.status.split()
    if not answer.ok or len(words) < 3 or not all(w.isdigit() for w in words[1:3]):
        raise Failed(f"STAT got {answer}, not '+OK count size' (RFC 1939 §5)")
    return int(words[1]), int(words[2])


def check_deletion(probe: POP3Probe) -> str:
    """A message marked deleted is gone for the session, and RSET brings it back (RFC 1939 §5).

    DELE of the first message, then RETR, LIST, TOP and DELE of it get
    ``-ERR``, STAT and LIST leave it out; RSET unmarks it. A server that
    serves, counts or deletes twice a marked message, or whose RSET misses
    one, loses or duplicates mail in every client that deletes as it goes.

    What a QUIT would delete is not tested, and cannot be without risking the
    message: a server whose RSET clears the listing's marks but not its own
    list of what to delete, or whose LIST ignores marks, would lose it. The
    session ends without QUIT (:meth:`~POP3Probe.end`), and a new session
    must list every message: closing without QUIT deletes nothing (RFC 1939 §6).
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
    for line in (b"RETR %d", b"LIST %d", b"TOP %d 0", b"DELE %d"):
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
    if problems:
        raise Failed("; ".join(problems))
    return (
        f"message {number} was gone after DELE and back after RSET; closed without QUIT, "
        "nothing was deleted"
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


# -- pipelining ----------------------------------------------------------------------------


def _pipelined_group(first: int) -> list[bytes]:
    return [
        b"STAT",
        b"LIST %d" % first,
        b"RETR %d" % first,
        b"XSMTPCORE",
        b"LIST",
        b"NOOP",
        b"RSET",
    ]


def _shape(answers: Sequence[POP3Response]) -> list[tuple[bool, bytes]]:
    return [(answer.ok, answer.content()) for answer in answers]


def check_pipelining(probe: POP3Probe) -> str:
    """Pipelined commands get one response each, in order (RFC 2449 §6.6).

    A group of accepted and refused commands, with multi-line responses among
    them, is sent one at a time on one session and in one write on another;
    the responses must match, and a NOOP after them get the only response left.
    A server that answers only the first command of a read, or reorders,
    fails (a reader of its responses would take one for another).
    """
    client = probe.session()
    offered = probe.capabilities(client)
    if offered is None or "PIPELINING" not in offered:
        raise Skipped("PIPELINING is not offered in CAPA")
    listing = probe.listing(client)
    mail_needed(listing)
    group = _pipelined_group(min(listing))
    lock_step = [ask(client, line) for line in group]
    probe.end(client)
    client = probe.session()
    client.send(b"".join(line + b"\r\n" for line in group))
    pipelined: list[POP3Response] = []
    for line in group:
        try:
            answer = read_response(client, multi_line=has_multi_line_response(line))
        except TimeoutError:
            answer = None
        if answer is None:
            raise Failed(
                f"{len(group)} commands in one write got {len(pipelined)} responses before "
                f"the server closed or fell silent for {probe.timeout:g} s"
            )
        pipelined.append(answer)
    if _shape(pipelined) != _shape(lock_step):
        shown = [str(answer) for answer in pipelined]
        raise Failed(
            f"pipelined, the group got {shown}; one at a time {[str(a) for a in lock_step]}"
        )
    probe.end(client)
    return f"{len(group)} pipelined commands got one response each, in order"


POP3_CHECKS: Final[Mapping[str, Callable[[POP3Probe], str]]] = {
    "delivered-intact": check_delivered_intact,
    "number-edges": check_number_edges,
    "stls-injection": check_stls_injection,
    "command-line-length": check_command_line_length,
    "dot-stuffing": check_dot_stuffing,
    "deletion": check_deletion,
    "uidl": check_uidl,
    "pipelining": check_pipelining,
    "state-order": check_state_order,
}
"""The battery, by name, in the order it runs. Each check returns a summary, or
raises to fail or be skipped; :func:`check_pop3_server` runs them.
``delivered-intact`` runs first, so that the others read the messages it delivers."""


def check_pop3_server(
    host: str,
    port: int,
    *,
    user: str,
    password: str,
    checks: Sequence[str] | None = None,
    timeout: float = 10.0,
    pause: float = 0.002,
    tls_context: ssl.SSLContext | None = None,
    deliver_via: tuple[str, int] | None = None,
    deliver_to: str | None = None,
    deliver_user: str | None = None,
    deliver_password: str | None = None,
    deliver_wait: float = 10.0,
    delete_delivered: bool = False,
) -> CheckReport:
    """Run the checks named in ``checks`` (all of :data:`POP3_CHECKS` by default)
    against the POP3 server at ``host:port``, logged in as ``user``.

    The mailbox needs one message at least (the checks that need one are
    skipped otherwise) and keeps every message: see the module's docstring.
    ``timeout`` bounds each wait (a whole response, a write, the TLS handshake,
    the close after QUIT); ``tls_context`` is used for STLS (by default, one
    that checks no certificate).

    With ``deliver_via=(smtp_host, smtp_port)``, ``delivered-intact`` first
    submits its test messages over SMTP to ``deliver_to`` (by default ``user``,
    which must then be a mailbox), with AUTH as ``deliver_user`` and
    ``deliver_password`` when given, STARTTLS (with ``tls_context``) where
    offered, and waits up to ``deliver_wait`` seconds for them over POP3. They
    are left in the mailbox, and the report's notes say so, unless
    ``delete_delivered``: then a last session deletes them, and only them, by
    their unique-ids and markers, and ends with QUIT; a new session looks for
    the markers after it, and the note counts as deleted only those it no
    longer finds.

    Raises ``ValueError`` for a host the socket calls cannot take, a port
    outside 1 to 65535, a ``timeout`` that is not a positive number, an
    unknown check name, a user or password (the delivery's too) with CR, LF
    or NUL, which would put commands of the caller's on the wire, or that
    UTF-8 cannot encode (a lone surrogate), a ``deliver_to`` that is
    no mailbox, ``deliver_user`` without ``deliver_password`` or the reverse, a
    ``deliver_wait`` outside 0 to 600 seconds, ``deliver_via`` with ``checks``
    that leave out ``delivered-intact``, or, without ``deliver_via``,
    ``delivered-intact`` named in ``checks`` or any other ``deliver_`` option or
    ``delete_delivered``; ``TypeError`` when
    ``checks`` is one str; :class:`ServerUnreachable` when the run's first
    connection fails.
    """
    run = pop3_run(
        host,
        port,
        user=user,
        password=password,
        checks=checks,
        timeout=timeout,
        pause=pause,
        tls_context=tls_context,
        deliver_via=deliver_via,
        deliver_to=deliver_to,
        deliver_user=deliver_user,
        deliver_password=deliver_password,
        deliver_wait=deliver_wait,
        delete_delivered=delete_delivered,
    )
    return run_pop3_checks(run)


@dataclass(frozen=True)
class POP3Run:
    """A run of the battery with its arguments checked (:func:`pop3_run`): what
    :func:`run_pop3_checks` needs, so that a caller (the CLI) tells a bad argument
    from what the run found."""

    host: str
    port: int
    user: str
    password: str = field(metadata=SECRET)
    names: tuple[str, ...]
    timeout: float
    pause: float
    tls_context: ssl.SSLContext | None
    delivery: Delivery | None
    delete_delivered: bool

    __repr__ = secret_repr


def pop3_run(
    host: str,
    port: int,
    *,
    user: str,
    password: str,
    checks: Sequence[str] | None,
    timeout: float,
    pause: float,
    tls_context: ssl.SSLContext | None,
    deliver_via: tuple[str, int] | None,
    deliver_to: str | None,
    deliver_user: str | None,
    deliver_password: str | None,
    deliver_wait: float,
    delete_delivered: bool,
) -> POP3Run:
    """The run :func:`check_pop3_server` describes, its arguments checked: the
    ``ValueError`` and ``TypeError`` it documents come from here, before any
    connection."""
    _check_word("password", password)
    names = check_pop3_arguments(
        host,
        port,
        user=user,
        checks=checks,
        timeout=timeout,
        pause=pause,
        deliver_via=deliver_via,
        deliver_to=deliver_to,
        deliver_wait=deliver_wait,
    )
    if deliver_via is None:
        _no_delivery_options(checks, deliver_to, deliver_user, deliver_password, delete_delivered)
        delivery = None
    else:
        for what, word in (("deliver_user", deliver_user), ("deliver_password", deliver_password)):
            if word is not None:
                _check_word(what, word)
        delivery = Delivery(
            deliver_via[0],
            deliver_via[1],
            deliver_to or user,
            deliver_user,
            deliver_password,
            wait=deliver_wait,
            tls_context=tls_context,
            timeout=timeout,
        )
    return POP3Run(
        host,
        port,
        user,
        password,
        tuple(names),
        timeout,
        pause,
        tls_context,
        delivery,
        delete_delivered,
    )


def check_pop3_arguments(
    host: str,
    port: int,
    *,
    user: str,
    checks: Sequence[str] | None,
    timeout: float,
    pause: float,
    deliver_via: tuple[str, int] | None,
    deliver_to: str | None,
    deliver_wait: float,
) -> list[str]:
    """The names of the checks to run, once every argument of :func:`pop3_run` that is
    no password nor a pairing with one is checked: what the CLI refuses before it
    asks for any password. Raises the ``ValueError`` and ``TypeError`` documented."""
    checked_host(host)
    _check_word("user", user)
    check_run_arguments(port, timeout, pause, checks)
    names = selected(POP3_CHECKS, checks)
    if deliver_via is not None:
        _check_delivery_target(deliver_via, deliver_to or user, deliver_wait, names)
    return names


def _check_word(what: str, word: object) -> None:
    """A user or password that can go on the wire as one argument (RFC 1939 §3), in
    UTF-8, as the battery sends it and seeks it to hide it (a lone surrogate has no
    octets to send)."""
    if not isinstance(word, str) or not word or any(c in word for c in "\r\n\0"):
        raise ValueError(f"{what} must be a non-empty str without CR, LF or NUL")
    try:
        word.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{what} must be text that UTF-8 can encode") from None


def run_pop3_checks(run: POP3Run) -> CheckReport:
    """Run the checked ``run``; :class:`ServerUnreachable` when its first connection fails."""
    results: list[CheckResult] = []
    reached = False  # a check skipped before connecting (no delivery asked) reached nothing
    for name in run.names:
        probe = POP3Probe(
            run.host, run.port, run.user, run.password, run.timeout, run.pause, run.tls_context
        )
        probe.delivery = run.delivery
        probe.after_session = reached
        result = run_one(name, POP3_CHECKS[name], probe, first=not reached)
        reached = reached or bool(probe.clients)
        results.append(probe.hide_credentials(result))
    notes = _delivery_notes(run)
    return CheckReport(host_port(run.host, run.port), tuple(results), notes)


def _no_delivery_options(
    checks: Sequence[str] | None,
    deliver_to: str | None,
    deliver_user: str | None,
    deliver_password: str | None,
    delete_delivered: bool,
) -> None:
    """Refuse what asks for a delivery without ``deliver_via``: it would be ignored, and
    ``delivered-intact`` asked by name would skip without a connection."""
    given = {
        "delivered-intact in checks": checks is not None and "delivered-intact" in checks,
        "deliver_to": deliver_to is not None,
        "deliver_user": deliver_user is not None,
        "deliver_password": deliver_password is not None,
        "delete_delivered": delete_delivered,
    }
    asked = [what for what, present in given.items() if present]
    if asked:
        raise ValueError(f"{', '.join(asked)} needs deliver_via (--deliver-via HOST:PORT)")


def _check_delivery_target(
    via: tuple[str, int], recipient: str, wait: float, names: Sequence[str]
) -> None:
    """Where and for how long the delivery goes, checked: the SMTP host and port, the
    recipient a mailbox (RFC 5321 §4.1.2), the wait bounded, delivered-intact run."""
    if "delivered-intact" not in names:
        raise ValueError("deliver_via is for the delivered-intact check, which checks leave out")
    smtp_host, smtp_port = via
    checked_host(smtp_host)
    check_run_arguments(smtp_port, 1.0, 0.0, None)
    if not math.isfinite(wait) or not 0 <= wait <= MAX_WAIT:
        raise ValueError(f"deliver_wait must be from 0 to {MAX_WAIT:g} seconds, not {wait!r}")
    checked_recipient(recipient)


def _delivery_notes(run: POP3Run) -> tuple[str, ...]:
    """What the report says of the test messages: left in the mailbox, or deleted."""
    delivery = run.delivery
    if delivery is None or not delivery.messages:
        return ()
    markers = f"{MARKER_FIELD.decode()}: {delivery.run}.*"
    if not run.delete_delivered:
        return (
            f"{len(delivery.messages)} delivered test messages ({markers}) were left in the "
            "mailbox; pass delete_delivered (--delete-delivered) to delete them",
        )
    probe = POP3Probe(run.host, run.port, run.user, run.password, delivery.timeout)
    probe.delivery = delivery
    outcome = probe.hide_credentials(
        run_one("delete-delivered", lambda p: delete_delivered(p, delivery), probe)
    )
    if outcome.outcome is Outcome.PASSED:
        return (outcome.summary,)
    return (failed_deletion_note(delivery, outcome.summary),)
