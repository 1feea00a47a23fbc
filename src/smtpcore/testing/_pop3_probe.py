"""The POP3 battery's side of a session: where the server is, who logs in, the
connections a check opened, and the mailbox's listing.

:class:`POP3Probe` holds the greeting, the login and the listing; its base classes
hold one concern each: how its sessions end without losing mail
(:mod:`~smtpcore.testing._pop3_session_end`: a session that may have touched a
message never sends ``QUIT``), and how its results quote the server's lines with
the password hidden (:mod:`~smtpcore.testing._pop3_quoting`). The checks read the
responses with :mod:`~smtpcore.testing._pop3_responses`, which frames them byte for
byte, on a connection of :mod:`~smtpcore.testing._pop3_wire`, which keeps the rules
of every line written; the names in this module's ``__all__`` are importable here too.
"""

from __future__ import annotations

import base64
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from smtpcore import pop3
from smtpcore._errors import RemoteProtocolError
from smtpcore._secret import SECRET, secret_repr
from smtpcore.testing._battery import (
    Failed,
    Skipped,
    busy_retry_pause,
    open_wire,
    refused_connection,
    transcript_of,
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
from smtpcore.testing._pop3_session_end import (
    QUIT_BEFORE_LOGIN_RULE,
    QUIT_UNMARKED_RULE,
    _EndsSessions,
)
from smtpcore.testing._pop3_wire import (
    POP3Wire,
    UnsafeQuit,
    ask_login,
    touches_no_message,
)
from smtpcore.testing._wire import Exchange, WireClient

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


class LoginRefused(Skipped):
    """The server refused the login: the check is skipped, for wrong credentials say
    nothing of the server. ``refusal`` is what happened, without the advice the
    skip gives, which is wrong where the same login worked before."""

    def __init__(self, refusal: str) -> None:
        super().__init__(f"{refusal}: give a user and password the server takes")
        self.refusal = refusal


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
class POP3Probe(_EndsSessions):
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

    def _plain_response(self) -> bytes:
        """AUTH PLAIN's initial response: no authorization identity, the user, the
        password, in base64 (RFC 4616 §2, RFC 5034 §4)."""
        return base64.b64encode(f"\0{self.user}\0{self.password}".encode())

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

    def transcript(self) -> tuple[Exchange, ...]:
        return transcript_of(self.clients)


def _busy(greeting: POP3Response) -> bool:
    """Whether ``greeting`` refuses a connection for now: ``[IN-USE]`` (RFC 2449
    §8.1.2) or ``[SYS/TEMP]`` (RFC 3206 §4)."""
    return greeting.err and status_and_code(greeting.status).upper().endswith(
        (b"[SYS/TEMP]", b"[IN-USE]")
    )
