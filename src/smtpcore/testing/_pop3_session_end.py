"""How a POP3 check's session ends without losing mail: ``QUIT`` only where the
session touched no message, else ``RSET`` and ``NOOP`` and the close without ``QUIT``,
which deletes nothing (RFC 1939 §6); either way a response the server owed no one
fails the check.

A server deletes a message only in the UPDATE state, after ``QUIT``, and some delete
there what was retrieved (a delete-after-download policy), or more than was left
marked after ``RSET`` (a broken one). :class:`_EndsSessions`, a base class of
:class:`~smtpcore.testing._pop3_probe.POP3Probe`, holds every way a check's session
ends; it is apart from the probe's openings and logins because ending is where the
user's mail is at stake.
"""

from __future__ import annotations

import time
from typing import Final

from smtpcore.testing._battery import Failed, close_all
from smtpcore.testing._pop3_quoting import _QuotesServerLines
from smtpcore.testing._pop3_wire import POP3Wire
from smtpcore.testing._wire import Exchange, WireClient

__all__ = ["QUIT_BEFORE_LOGIN_RULE", "QUIT_UNMARKED_RULE", "SETTLE", "_EndsSessions"]

SETTLE: Final = 0.2
"""Seconds the last read of a session waits for a response no command asked for."""
_MAX_LATE_LINES: Final = 16


QUIT_BEFORE_LOGIN_RULE: Final = "RFC 1939 §4: QUIT before login gets +OK"
"""Why ``-ERR`` to QUIT before login fails, for a summary."""
QUIT_UNMARKED_RULE: Final = (
    "RFC 1939 §4, §6: -ERR to QUIT says marked messages were not removed, and the "
    "session marked none"
)
"""Why ``-ERR`` to QUIT on a session that marked no message fails, logged in or not,
for a summary."""


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


class _EndsSessions(_QuotesServerLines):
    """The probe's ends of sessions; ``clients`` is
    :class:`~smtpcore.testing._pop3_probe.POP3Probe`'s."""

    clients: list[POP3Wire]

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

    def close(self) -> None:
        """Close every connection, those that may have touched a message after RSET,
        none with QUIT (their transcripts stay for the result)."""
        for client in self.clients:
            if client.touched and not client.closed:
                self.abandon(client)
        close_all(self.clients)
