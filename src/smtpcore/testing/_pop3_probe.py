"""The POP3 battery's side of a session: responses read byte for byte, logins, listings,
and sessions ended without losing a message.

The checks talk to servers written in any language, so, as the SMTP battery,
they write raw lines on a :class:`~smtpcore.testing._wire.WireClient` and
frame the responses themselves (RFC 1939 §3): a status line, and after a
``+OK`` to a command that has a multi-line response, lines up to a lone dot.

The mail in the mailbox is the user's. A server deletes a message only in
the UPDATE state, after ``QUIT`` (RFC 1939 §6), so a session that sent
``DELE`` is ended with ``QUIT`` only after ``RSET`` and a listing as whole
as the one taken at login (:meth:`POP3Probe.restore`); any other way out is
the connection closed without ``QUIT``, which deletes nothing.
"""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from smtpcore.testing._battery import (
    Failed,
    Skipped,
    close_all,
    open_wire,
    transcript_of,
)
from smtpcore.testing._wire import Exchange, WireClient

__all__ = ["POP3Probe", "POP3Response", "ask", "has_multi_line_response", "read_response"]

Listing = dict[int, int]
"""A scan listing: message number to size in octets (RFC 1939 §5, LIST)."""

_TERMINATOR: Final = b".\r\n"
_LOCK_RETRY: Final = 0.05


@dataclass(frozen=True)
class POP3Response:
    """One response: its status line and, for a multi-line one, its lines as sent
    (line ends and stuffing dots kept, the terminating dot left out)."""

    status: bytes
    lines: tuple[bytes, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status.startswith(b"+OK")

    @property
    def err(self) -> bool:
        return self.status.startswith(b"-ERR")

    def content(self) -> bytes:
        """The lines with the stuffing dot taken off each line that starts with one."""
        return b"".join(line[1:] if line.startswith(b".") else line for line in self.lines)

    def __str__(self) -> str:
        return repr(self.status.rstrip(b"\r\n"))[1:]


def has_multi_line_response(command: bytes) -> bool:
    """Whether a ``+OK`` to ``command`` starts a multi-line response: RETR, TOP, CAPA,
    and LIST and UIDL without an argument (RFC 1939 §5, §7; RFC 2449 §5)."""
    words = command.split(b" ")
    verb = words[0].upper()
    return verb in (b"RETR", b"TOP", b"CAPA") or (verb in (b"LIST", b"UIDL") and len(words) == 1)


def read_response(client: WireClient, *, multi_line: bool) -> POP3Response | None:
    """The next response, or None where the server closed before its status line.
    A multi-line response cut short by the close fails the check."""
    status = client.read_line()
    if status is None:
        return None
    if not (multi_line and status.startswith(b"+OK")):
        return POP3Response(status)
    lines = []
    while (line := client.read_line()) != _TERMINATOR:
        if line is None:
            raise Failed(
                f"the server closed the connection inside the multi-line response to "
                f"{status!r} (no terminating dot line, RFC 1939 §3)"
            )
        lines.append(line)
    return POP3Response(status, tuple(lines))


def ask(client: WireClient, command: bytes) -> POP3Response:
    """Send ``command`` (CRLF added) and read its response; a close where the response
    was due fails the check: a session that dies on a command is a crash."""
    client.send(command + b"\r\n")
    answer = read_response(client, multi_line=has_multi_line_response(command))
    if answer is None:
        shown = command.decode("utf-8", "replace")
        raise Failed(f"the server closed the connection instead of answering {shown!r}")
    return answer


def parse_listing(answer: POP3Response) -> Listing:
    """The scan listing of a multi-line LIST: ``n size`` a line (RFC 1939 §5)."""
    listing: Listing = {}
    for line in answer.lines:
        words = line.rstrip(b"\r\n").split(b" ")
        if len(words) < 2 or not all(w.isdigit() and w.isascii() for w in words[:2]):
            raise Failed(f"LIST gave the line {line!r}, not 'number size' (RFC 1939 §5)")
        listing[int(words[0])] = int(words[1])
    return listing


def mail_needed(listing: Mapping[int, object]) -> None:
    """Skip a check that needs a message where the mailbox holds none."""
    if not listing:
        raise Skipped("the mailbox is empty: put one message in the mailbox")


@dataclass
class POP3Probe:
    """Where the POP3 server is, who logs in, and the connections a check made.

    A check opens connections with :meth:`connect` or :meth:`session`, raises
    to fail or skip, and ends a session with :meth:`quit`; the connections'
    transcripts become the result's.
    """

    host: str
    port: int
    user: str
    password: str
    timeout: float = 10.0
    pause: float = 0.002
    tls_context: ssl.SSLContext | None = None
    clients: list[WireClient] = field(default_factory=list)
    deleting: list[WireClient] = field(default_factory=list)
    """Connections that sent ``DELE`` (or a line that might be read as one) and have
    not been restored: :meth:`quit` refuses them, :meth:`close` sends them RSET."""

    def connect(self) -> WireClient:
        """A new connection, its ``+OK`` greeting read (anything else fails the check)."""
        client = open_wire(self.host, self.port, timeout=self.timeout, pause=self.pause)
        self.clients.append(client)
        greeting = read_response(client, multi_line=False)
        if greeting is None or not greeting.ok:
            raise Failed(f"the greeting was {greeting} rather than +OK (RFC 1939 §4)")
        return client

    def login(self, client: WireClient) -> WireClient:
        """USER and PASS (RFC 1939 §7), or, where USER is refused, AUTH PLAIN with an
        initial response (RFC 5034 §4); a refusal skips the check: wrong credentials
        say nothing of the server. A mailbox still locked by a session just closed
        (``[IN-USE]``, RFC 2449 §8.1.2) is tried again, on new connections, until
        ``timeout`` has passed: a server releases the lock once it sees the close.
        Returns the connection logged in."""
        deadline = time.monotonic() + self.timeout
        while (answer := self._log_in(client)).ok is False:
            if b"[IN-USE]" not in answer.status.upper() or time.monotonic() > deadline:
                raise Skipped(
                    f"logging in as {self.user!r} was refused ({answer}): give a user and "
                    "password the server takes"
                )
            self.abandon(client)
            time.sleep(_LOCK_RETRY)
            client = self.connect()
        return client

    def _log_in(self, client: WireClient) -> POP3Response:
        user = ask(client, b"USER " + self.user.encode())
        if user.ok:
            return ask(client, b"PASS " + self.password.encode())
        secret = f"\0{self.user}\0{self.password}".encode()
        answer = ask(client, b"AUTH PLAIN " + base64.b64encode(secret))
        if answer.status.startswith(b"+ "):
            answer = ask(client, b"*")
        return answer

    def session(self) -> WireClient:
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
        return parse_listing(answer)

    def delete_from(self, client: WireClient) -> None:
        """Note that ``client`` is about to send a line that may mark a message deleted."""
        if client not in self.deleting:
            self.deleting.append(client)

    def restore(self, client: WireClient, before: Listing) -> None:
        """RSET, then a listing that must equal ``before`` (RFC 1939 §5: RSET unmarks
        every message); only then may ``client`` end with QUIT."""
        answer = ask(client, b"RSET")
        after = self.listing(client) if answer.ok else None
        if after != before:
            raise Failed(
                f"after RSET ({answer}) the listing is {after}, not {before}: the session "
                "is closed without QUIT, so that nothing is deleted"
            )
        if client in self.deleting:
            self.deleting.remove(client)

    def quit(self, client: WireClient) -> None:
        """QUIT, then every line until the server closes: exactly one ``+OK`` (RFC
        1939 §6), else the check fails, since a surplus line answers a command read
        from inside something else."""
        if client in self.deleting:
            raise AssertionError("a session that may have marked messages must restore first")
        client.send(b"QUIT\r\n")
        lines = client.read_lines_until_closed()
        if not client.closed:
            raise Failed(
                f"QUIT got {lines}, and the server did not close the connection within "
                f"{client.timeout:g} s (RFC 1939 §6)"
            )
        if len(lines) != 1 or not lines[0].startswith(b"+OK"):
            raise Failed(
                f"QUIT got {lines} before the close, not one +OK: a line the server owed no "
                "one was counted (RFC 1939 §6)"
            )

    def abandon(self, client: WireClient) -> None:
        """Give up ``client`` (it showed what it had to): RSET where it may have
        marked a message, then the close, without QUIT, so nothing is deleted."""
        if client in self.deleting and not client.closed:
            client.send(b"RSET\r\n")
            self.deleting.remove(client)
        client.transcript.append(Exchange("note", note="closed without QUIT"))
        client.close()

    def transcript(self) -> tuple[Exchange, ...]:
        return transcript_of(self.clients)

    def close(self) -> None:
        """Close every connection, those that may have marked a message after RSET and
        without QUIT (their transcripts stay for the result)."""
        for client in list(self.deleting):
            self.abandon(client)
        close_all(self.clients)
