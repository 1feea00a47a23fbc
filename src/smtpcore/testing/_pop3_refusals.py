"""Sessions for the POP3 checks that send many lines a server must refuse.

A server may end a session after too many refused commands (Dovecot after 20,
smtpcore after 10), so :class:`RefusalSessions` opens a new session where one
closed and tries the line again once before a close counts, and tells the
notice a server may send before it closes from a surplus response. Both
``number-edges`` and ``state-order`` send such lines: this is theirs to share.
"""

from __future__ import annotations

from collections.abc import Sequence

from smtpcore.testing._battery import Failed, Skipped
from smtpcore.testing._pop3_probe import POP3Probe
from smtpcore.testing._pop3_responses import POP3Response, read_response
from smtpcore.testing._pop3_wire import HIDDEN, POP3Wire
from smtpcore.testing._wire import WireClient

__all__ = ["RefusalSessions"]


class RefusalSessions:
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
