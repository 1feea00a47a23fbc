"""The POP3 battery's side of a session: logins, listings, and sessions ended
without losing a message.

The checks read the responses with :mod:`~smtpcore.testing._pop3_responses`,
which frames them byte for byte, on a connection of
:mod:`~smtpcore.testing._pop3_wire`, which keeps the rules of every line
written; the names of both are exported here too.

The mail in the mailbox is the user's. A server deletes a message only in
the UPDATE state, after ``QUIT`` (RFC 1939 §6), and some delete there what
was retrieved (a delete-after-download policy), or more than was left
marked after ``RSET`` (a broken one). So a session that sent ``RETR``,
``TOP`` or ``DELE``, or any line a server might read as one, never sends
``QUIT``: its connection (a :class:`~smtpcore.testing._pop3_wire.POP3Wire`)
refuses to write it, and :meth:`POP3Probe.end` sends ``RSET`` and ``NOOP``
and closes without ``QUIT``, which deletes nothing. Only a session that
touched no message ends with ``QUIT``.
"""

from __future__ import annotations

import base64
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

from smtpcore import pop3
from smtpcore._errors import RemoteProtocolError
from smtpcore._secret import SECRET, secret_repr
from smtpcore.testing._battery import (
    CheckResult,
    Failed,
    Skipped,
    busy_retry_pause,
    close_all,
    open_wire,
    refused_connection,
    transcript_of,
)
from smtpcore.testing._hiding import (
    credential_forms,
    hide_in_bytes,
    hide_in_server_reads,
    hide_in_text,
)
from smtpcore.testing._pop3_responses import (
    OverlongResponse,
    POP3Response,
    ResponseBound,
    StalledResponse,
    ask,
    has_multi_line_response,
    lines_of,
    read_response,
    status_and_code,
    wire_number,
)
from smtpcore.testing._pop3_wire import (
    HIDDEN,
    POP3Wire,
    UnsafeQuit,
    ask_login,
    touches_no_message,
)
from smtpcore.testing._wire import Exchange, WireClient, excerpt_reads

if TYPE_CHECKING:
    from smtpcore.testing._delivery import Delivery

__all__ = [
    "LoginRefused",
    "OverlongResponse",
    "POP3Probe",
    "POP3Response",
    "POP3Wire",
    "ResponseBound",
    "StalledResponse",
    "UnsafeQuit",
    "ask",
    "ask_login",
    "has_multi_line_response",
    "lines_of",
    "QUIT_BEFORE_LOGIN_RULE",
    "QUIT_UNMARKED_RULE",
    "read_response",
    "touches_no_message",
    "wire_number",
]

Listing = dict[int, int]
"""A scan listing: message number to size in octets (RFC 1939 §5, LIST)."""

_LOCK_RETRY: Final = 0.05

_SCAN_LISTING_START: Final = re.compile(rb"[0-9]+ [0-9]")
"""How a scan listing line starts: the number, a single space, the size (RFC 1939 §5).
What follows the size is the server's own; :func:`smtpcore.pop3.parse_listing`, which
splits at any run of whitespace, reads the numbers."""
_WRONG: Final = b"-not-the-password"
SETTLE: Final = 0.2
"""Seconds the last read of a session waits for a response no command asked for."""
_MAX_LATE_LINES: Final = 16


class LoginRefused(Skipped):
    """The server refused the login: the check is skipped, for wrong credentials say
    nothing of the server. ``refusal`` is what happened, without the advice the
    skip gives, which is wrong where the same login worked before."""

    def __init__(self, refusal: str) -> None:
        super().__init__(f"{refusal}: give a user and password the server takes")
        self.refusal = refusal


def _cut(line: bytes, *, tail: bool = False) -> bytes:
    """``line`` cut at :data:`_SHOWN_OCTETS`, or just past a :data:`HIDDEN` the cut
    would split: ``<hid`` says less than the whole mark. With ``tail``, its last
    :data:`_SHOWN_OCTETS` octets, or from just before a :data:`HIDDEN` the cut would
    split."""
    if not tail:
        mark = line.find(HIDDEN, _SHOWN_OCTETS - len(HIDDEN) + 1, _SHOWN_OCTETS + len(HIDDEN) - 1)
        return line[: mark + len(HIDDEN) if mark >= 0 else _SHOWN_OCTETS]
    edge = max(0, len(line) - _SHOWN_OCTETS)
    mark = line.find(HIDDEN, max(0, edge - len(HIDDEN) + 1), edge + len(HIDDEN) - 1)
    return line[mark if mark >= 0 else edge :]


_SHOWN_OCTETS: Final = 40
_SHOWN_LINES: Final = 4


def parse_listing(answer: POP3Response, said: Callable[[bytes], str]) -> Listing:
    """The scan listing of a multi-line LIST, read by :func:`smtpcore.pop3.parse_listing`
    as a client reads it: ``n size`` a line, ``n`` from 1 to
    :data:`~smtpcore.pop3.MAX_MESSAGE_NUMBER`, each message once (RFC 1939 §5). Each
    line is read alone first, so that a line it refuses is quoted by ``said``
    (:meth:`POP3Probe.line_said`, which hides the password) and an empty one counts;
    it must also start as §5 says, ``number SP size`` (:data:`_SCAN_LISTING_START`),
    which the clients' reader does not ask of it."""
    for line in answer.lines:
        try:
            pairs = pop3.parse_listing(line)
        except RemoteProtocolError:
            pairs = []
        if len(pairs) != 1 or not _SCAN_LISTING_START.match(line):
            raise Failed(
                f"LIST gave the line {said(line)}, not 'number size', a single space "
                f"apart, for a message numbered 1 to {pop3.MAX_MESSAGE_NUMBER} (RFC 1939 §5)"
            )
    try:
        return dict(pop3.parse_listing(answer.content()))
    except RemoteProtocolError as exc:  # the lines are good: one message listed twice
        raise Failed(f"LIST gave {exc} (RFC 1939 §5)") from None


def mail_needed(listing: Mapping[int, object]) -> None:
    """Skip a check that needs a message where the mailbox holds none."""
    if not listing:
        raise Skipped("the mailbox is empty: put one message in the mailbox")


@dataclass
class POP3Probe:
    """Where the POP3 server is, who logs in, and the connections a check made.

    A check opens connections with :meth:`connect` or :meth:`session`, raises
    to fail or skip, records in :attr:`problems` the defects it goes on past, and
    ends a session with :meth:`end`; the connections' transcripts become the
    result's.
    """

    host: str
    port: int
    user: str
    password: str = field(metadata=SECRET)
    timeout: float = 10.0
    pause: float = 0.002
    tls_context: ssl.SSLContext | None = None
    clients: list[POP3Wire] = field(default_factory=list)
    delivery: Delivery | None = None
    """Where the battery delivers its test messages over SMTP, if it does."""
    problems: list[str] = field(default_factory=list)
    """Defects a check found and went on past: they fail the check however it ends,
    a ``-ERR`` greeting or a refused login on a later session included
    (:func:`~smtpcore.testing._battery.run_one`). A check that goes on past a defect
    records it here, never in a list of its own that a skip would drop."""
    after_session: bool = False
    """Whether the battery's own session ended just before this check: a busy greeting
    on its first connection is then tried again (:meth:`connect`), as on its later
    ones."""

    __repr__ = secret_repr

    def connect(self) -> POP3Wire:
        """A new connection, its ``+OK`` greeting read.

        A ``-ERR`` greeting is a server refusing a new connection, busy or at its
        limit of connections (``[SYS/TEMP]``, RFC 3206 §4): the server cannot be
        tested through it, and the check is skipped
        (:func:`~smtpcore.testing._battery.refused_connection`), on the run's first
        connection as on any other. Anything else but ``+OK`` fails the check.

        A busy greeting (``-ERR [SYS/TEMP]`` or ``[IN-USE]``) right after the
        battery's own last session ended (any connection but the run's first) may be
        a per-address limit that has not yet freed that session's slot: it is tried
        again, a few times within ``timeout``
        (:func:`~smtpcore.testing._battery.busy_retry_pause`), before it counts; the
        transcript notes each refusal so tried again."""
        started, tried = time.monotonic(), 0
        notes: list[Exchange] = []
        retry = self.after_session or bool(self.clients)
        while True:
            client = open_wire(
                self.host, self.port, timeout=self.timeout, pause=self.pause, kind=POP3Wire
            )
            tried += 1
            self.clients.append(client)
            client.transcript[:0] = notes
            greeting = read_response(client, multi_line=False)
            pause = busy_retry_pause(tried, started, self.timeout) if retry else None
            if greeting is None or not _busy(greeting) or pause is None:
                break
            client.close()
            self.clients.remove(client)
            notes.append(Exchange("note", note=f"greeted {greeting}: tried again"))
            time.sleep(pause)
        if greeting is not None and greeting.err:
            raise refused_connection(
                greeting, "RFC 1939 §4 (a session starts with +OK): a connection limit?"
            )
        if greeting is None:
            raise Failed(
                "the server closed the connection without a greeting (+OK expected, RFC 1939 §4)"
            )
        if not greeting.ok:
            raise Failed(f"the greeting was {greeting} rather than +OK (RFC 1939 §4)")
        return client

    def login(self, client: POP3Wire) -> POP3Wire:
        """USER and PASS (RFC 1939 §7), or, where USER is refused, AUTH PLAIN with an
        initial response (RFC 5034 §4); a refusal skips the check: wrong credentials
        say nothing of the server. A mailbox still locked by a session just closed
        (``[IN-USE]``, RFC 2449 §8.1.2) is tried again, on new connections, until
        ``timeout`` has passed: a server releases the lock once it sees the close.
        Returns the connection logged in."""
        deadline = time.monotonic() + self.timeout
        while (answer := self._log_in(client)).ok is False:
            if b"[IN-USE]" not in answer.status.upper() or time.monotonic() > deadline:
                raise LoginRefused(
                    f"logging in as {self.user!r} was refused ({answer.without_text()}; its "
                    "text is not shown: it may quote the password)"
                )
            self.abandon(client)
            time.sleep(_LOCK_RETRY)
            client = self.connect()
        return client

    def _log_in(self, client: POP3Wire) -> POP3Response:
        user = ask_login(client, b"USER " + self.user.encode())
        if user.ok:
            return ask_login(client, b"PASS ", self.password.encode())
        answer = ask_login(client, b"AUTH PLAIN ", self._plain_response())
        if answer.status.startswith(b"+ "):
            answer = ask_login(client, b"*")
        return answer

    def wrong_password(self) -> bytes:
        """A password the server must refuse: the user's, lengthened (RFC 1939 §7)."""
        return self.password.encode() + _WRONG

    def _plain_response(self) -> bytes:
        """AUTH PLAIN's initial response: no authorization identity, the user, the
        password, in base64 (RFC 4616 §2, RFC 5034 §4)."""
        return base64.b64encode(f"\0{self.user}\0{self.password}".encode())

    def _credentials(self) -> tuple[bytes, ...]:
        """Every form the password takes on the wire (:func:`credential_forms`), the
        wrong password the battery writes, and the delivery's forms."""
        delivered = tuple(self.delivery.secrets()) if self.delivery else ()
        own = credential_forms(self.user, self.password)
        return (*own, self.wrong_password(), *delivered)

    def hide_credentials(self, result: CheckResult) -> CheckResult:
        """``result`` with :data:`HIDDEN` where a server says the password back, in
        any form the battery sent it, standing as a word: across the reads that cut
        it in the transcript, and as a bytes repr writes it in the summary and the
        notes, which quote server bytes whole, in excerpts and in lists
        (:mod:`~smtpcore.testing._hiding`). What the battery wrote is hidden where it
        wrote it (:meth:`POP3Wire.send_login`). Only a word is hidden: a short
        password (``1``) is also part of numbers that say nothing of it. Results are
        printed and shared; the password has no business in them."""
        secrets = self._credentials()
        transcript = tuple(
            replace(entry, note=hide_in_text(entry.note, secrets, HIDDEN)) if entry.note else entry
            for entry in hide_in_server_reads(result.transcript, secrets, HIDDEN)
        )
        summary = hide_in_text(result.summary, secrets, HIDDEN)
        return replace(result, summary=summary, transcript=transcript)

    def lines_said(self, lines: Sequence[bytes]) -> str:
        """``lines``, one or more the server sent, for a summary: how many, then the
        first :data:`_SHOWN_LINES` quoted as bytes reprs without their line ends, the
        password hidden (as :meth:`hide_credentials` hides it) and only then cut at
        :data:`_SHOWN_OCTETS`: cut first, a line would show the start of a password
        it cut through, which hiding the summary no longer finds. Every line a POP3
        summary quotes goes through here. A caller says "no response" in words where
        none came: an empty list printed says nothing a reader can use."""
        quoted = [self.line_said(line) for line in lines[:_SHOWN_LINES]]
        if len(lines) > _SHOWN_LINES:
            quoted.append(f"{len(lines) - _SHOWN_LINES} more")
        count = "1 line" if len(lines) == 1 else f"{len(lines)} lines"
        return f"{count} ({', '.join(quoted)})"

    def line_said(self, line: bytes, *, tail: bool = False) -> str:
        """One line the server sent, for a summary: a bytes repr without its line end,
        the password hidden, then cut (:meth:`lines_said`). With ``tail``, its last
        octets, line end kept: where what is wrong is how the line ends (a bare LF in
        a message, ``dot-stuffing``), hidden first and cut after, as ever."""
        hidden = hide_in_bytes(line, self._credentials(), HIDDEN)
        return repr(_cut(hidden, tail=True) if tail else _cut(hidden.rstrip(b"\r\n")))

    def session(self) -> POP3Wire:
        """A new connection, logged in (the TRANSACTION state, RFC 1939 §5)."""
        return self.login(self.connect())

    def capabilities(self, client: WireClient) -> set[str] | None:
        """The CAPA keywords, upper case (RFC 2449 §5), or None where CAPA is refused."""
        answer = ask(client, b"CAPA")
        if not answer.ok:
            return None
        return {
            line.split(b" ")[0].strip().decode("ascii", "replace").upper() for line in answer.lines
        }

    def listing(self, client: WireClient) -> Listing:
        answer = ask(client, b"LIST")
        if not answer.ok:
            raise Failed(f"LIST was answered {answer} in the TRANSACTION state (RFC 1939 §5)")
        return parse_listing(answer, self.line_said)

    def restore(self, client: WireClient, before: Listing) -> None:
        """RSET, then a listing that must equal ``before`` (RFC 1939 §5: RSET unmarks
        every message). It proves the server's RSET, not what a QUIT would delete:
        the session still ends without QUIT (:meth:`end`)."""
        answer = ask(client, b"RSET")
        after = self.listing(client) if answer.ok else None
        if after != before:
            raise Failed(
                f"after RSET ({answer}) the listing is {after}, not {before}: the session "
                "is closed without QUIT, so that nothing is deleted"
            )

    def end(self, client: POP3Wire) -> None:
        """End a session without losing mail: QUIT where it touched no message, else
        RSET and NOOP and the close without QUIT, which deletes nothing (RFC 1939 §6).
        Either way a response the server owed no one (to a command read from inside
        a line or a message) is counted, and fails the check."""
        if client.closed or client.write_failed:
            self.abandon(client)
        elif client.touched:
            self._leave(client)
        else:
            self._quit(client)

    def _quit(self, client: POP3Wire, *, marked: bool = False) -> bytes:
        """QUIT, then every line until the server closes: exactly one status line,
        which it returns, else the check fails. It must be ``+OK``: before login QUIT
        gets nothing else (RFC 1939 §4), and in the UPDATE state ``-ERR`` reports
        only that some messages marked deleted were not removed (§6), which a session
        that marked none cannot be told. Only where the session ``marked`` messages
        (:meth:`quit_after_own_deletions`) is ``-ERR`` taken too."""
        client.send(b"QUIT\r\n")
        lines = client.read_lines_until_closed()
        if not client.closed:
            got = (
                f"QUIT got {self.lines_said(lines)}, and" if lines else "QUIT went unanswered, and"
            )
            raise Failed(
                f"{got} the server did not close the connection within {client.timeout:g} s "
                "(RFC 1939 §6)"
            )
        if not lines:
            raise Failed(
                "the server closed the connection with QUIT unanswered (no +OK, RFC 1939 §6)"
            )
        owed = "+OK or -ERR" if marked else "+OK"
        if len(lines) == 1 and not lines[0].startswith((b"+OK", b"-ERR") if marked else b"+OK"):
            rule = "RFC 1939 §6" if marked else QUIT_UNMARKED_RULE
            said = self.lines_said(lines)
            raise Failed(f"QUIT got {said} before the close, not {owed} ({rule})")
        if len(lines) > 1:
            raise Failed(
                f"QUIT got {self.lines_said(lines)} before the close, not one "
                f"{'status line' if marked else '+OK'}: a line the server owed no one was "
                "counted (RFC 1939 §6)"
            )
        return lines[0]

    def _leave(self, client: POP3Wire) -> None:
        """RSET and NOOP, one status line each, then nothing for :data:`SETTLE`
        seconds; then the close without QUIT. A server answers in order, so a
        response owed no one comes before NOOP's, or just after."""
        client.send(b"RSET\r\nNOOP\r\n")
        deadline = time.monotonic() + client.timeout
        lines: list[bytes] = []
        while len(lines) < 2 and (line := client.read_line(deadline)) is not None:
            lines.append(line)
        lines += _late_lines(client)
        self.abandon(client)
        if len(lines) > 2 or not all(line.startswith((b"+OK", b"-ERR")) for line in lines):
            raise Failed(
                f"RSET and NOOP, the session's last commands, got {self.lines_said(lines)}, not "
                "one status line each: a response the server owed no one was counted (RFC "
                "1939 §3)"
            )

    def quit_after_own_deletions(self, client: POP3Wire) -> bytes:
        """QUIT, to delete what the session marked, on a session whose only lines that
        touched a message were DELE of the battery's own test messages (asked for
        explicitly): the one QUIT after a touch (RFC 1939 §6), and the one session
        whose QUIT may get ``-ERR``, some marked messages not removed. Returns its
        status line."""
        client.touched = False
        return self._quit(client, marked=True)

    def abandon(self, client: POP3Wire) -> None:
        """Give up ``client`` (it showed what it had to): RSET where it may have
        touched a message, then the close, without QUIT, so nothing is deleted."""
        if client.touched and not client.closed:
            client.send(b"RSET\r\n")
        if not client.closed:
            client.transcript.append(Exchange("note", note="closed without QUIT"))
        client.close()
        client.closed = True

    def keep_little_of(self, client: POP3Wire) -> None:
        """Keep of ``client``'s reads, a session ended whose reads no longer matter (a
        look that found nothing new), the first and last octets of each
        (:func:`~smtpcore.testing._wire.excerpt_reads`), the password hidden first
        as in :meth:`hide_credentials`: the transcript of a check of many sessions is
        then bounded by one session's :data:`~smtpcore.testing._wire.MAX_RECEIVED`,
        not by that times their number, and no verdict changes."""
        hidden = hide_in_server_reads(client.transcript, self._credentials(), HIDDEN)
        client.transcript[:] = excerpt_reads(hidden)

    def transcript(self) -> tuple[Exchange, ...]:
        return transcript_of(self.clients)

    def close(self) -> None:
        """Close every connection, those that may have touched a message after RSET,
        none with QUIT (their transcripts stay for the result)."""
        for client in self.clients:
            if client.touched and not client.closed:
                self.abandon(client)
        close_all(self.clients)


QUIT_BEFORE_LOGIN_RULE: Final = "RFC 1939 §4: QUIT before login gets +OK"
"""Why ``-ERR`` to QUIT before login fails, for a summary."""
QUIT_UNMARKED_RULE: Final = (
    "RFC 1939 §4, §6: -ERR to QUIT says marked messages were not removed, and the "
    "session marked none"
)
"""Why ``-ERR`` to QUIT on a session that marked no message fails, logged in or not,
for a summary."""


def _busy(greeting: POP3Response) -> bool:
    """Whether ``greeting`` refuses a connection for now: ``[IN-USE]`` (RFC 2449
    §8.1.2) or ``[SYS/TEMP]`` (RFC 3206 §4)."""
    return greeting.err and status_and_code(greeting.status).upper().endswith(
        (b"[SYS/TEMP]", b"[IN-USE]")
    )


def _late_lines(client: WireClient) -> list[bytes]:
    """The lines that come within :data:`SETTLE` seconds (a few at most)."""
    deadline = time.monotonic() + min(client.timeout, SETTLE)
    lines: list[bytes] = []
    for _ in range(_MAX_LATE_LINES):
        try:
            line = client.read_line(deadline)
        except TimeoutError:  # no failure: say what the wait found, not that it ran out
            client.transcript[-1] = Exchange("note", note=f"nothing more within {SETTLE:g} s")
            break
        if line is None:
            break
        lines.append(line)
    return lines
