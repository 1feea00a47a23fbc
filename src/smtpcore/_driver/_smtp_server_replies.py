"""The replies of an SMTP server session: made through the machine, kept in order,
written in one piece.

:class:`SessionReplies` is the base of every part of
:class:`~smtpcore._driver._smtp_server.ServerSession`: each answers the client
with :meth:`~SessionReplies._answer`, and the replies due are written together
once the commands already received are answered (RFC 2920 §3.1), by the
session's loop or, where a session must write before it waits, here. It also
holds the slots of every part's fields, and declares those they all read (the
session's machine, options, state).
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from smtpcore._driver._connection_lost import ConnectionLost
from smtpcore._driver._failures import LOCAL_ERROR
from smtpcore._driver._served_session import ServedSession
from smtpcore._driver._shutdown import LAST_WORDS
from smtpcore._driver._smtp_server_options import ServerOptions
from smtpcore._errors import LocalProtocolError
from smtpcore.handler import Session
from smtpcore.smtp import Reply, ServerConnection, State

if TYPE_CHECKING:
    from smtpcore._driver._smtp_server import ServerState


logger = logging.getLogger("smtpcore.server")


OK: Final = Reply(250, "OK")


class SessionReplies(ServedSession):
    """What every part of an SMTP server session shares: its fields, and the replies
    it makes and writes. It holds the slots of every part: its subclasses have none
    of their own."""

    # Every part's fields, here rather than in ServerSession: mypy takes an
    # assignment to a field outside the slots of the class that assigns it for a
    # mistake, and only one base of a class may hold slots. The same layout.
    __slots__ = (
        "_auth",
        "_connect_told",
        "_content_failure",
        "_content_wait",
        "_in_chunk",
        "_last_read",
        "_out",
        "_waited_idle",
        "conn",
        "options",
    )

    state: ServerState
    session: Session
    options: ServerOptions
    conn: ServerConnection
    """The session's machine: the server's own, built with the session, or a
    ``connection_factory``'s, taken as the session starts (:meth:`_open`)."""
    _out: list[bytes] | None

    def _flush(self) -> Coroutine[Any, Any, None] | None:
        """Write the replies due: None once the transport took them all at once (a
        connection's last reply, nearly always), else what writes the rest under the
        command timeout, to await (no coroutine made for a write that needs none)."""
        out = self._out
        if out is None:
            return None
        self._out = None
        data = out[0] if len(out) == 1 else b"".join(out)
        try:
            sent = self.transport.send_nowait(data)
        except OSError:
            self.conn.send_failed()
            raise ConnectionLost from None
        if sent < len(data):
            self._out = [data[sent:]]
            return self._write_rest()
        return None

    async def _write_rest(self) -> None:
        async with self.transport.deadline(self._write_within(self.options.timeouts.command)):
            await self._write_out()

    def _write_within(self, seconds: float | None) -> float | None:
        """The time a write of replies has: ``seconds`` (the command timeout), but
        :data:`LAST_WORDS` at most behind a write the client did not take in its time
        (:attr:`_write_unfinished`). The ``421`` queued behind the bytes a client that
        does not read left unsent would otherwise hold the session for a whole
        timeout again, as a shutdown's cut-off does not let it."""
        if not self._write_unfinished:
            return seconds
        return LAST_WORDS if seconds is None else min(seconds, LAST_WORDS)

    async def _write_out(self) -> None:
        out = self._out
        if out is None:
            return
        self._out = None
        data = out[0] if len(out) == 1 else b"".join(out)
        try:
            await self._send_all(data)
        except OSError:
            self.conn.send_failed()
            raise ConnectionLost from None

    def _answer(
        self, reply: Reply, fallback: Reply = LOCAL_ERROR, *, log_refusal: bool = True
    ) -> Reply:
        """Send ``reply`` through the machine; a reply it refuses becomes ``fallback``,
        logged with its traceback unless not ``log_refusal`` (LMTP's replies to one
        message, logged once for them all).

        Returns the reply that stands. A session whose machine is closed (a 421 or
        221 ended it) is sent nothing more, not even ``fallback``, which then only
        stands for the refused reply: what was sent before it still goes out."""
        try:
            data = self.conn.send(reply)
        except LocalProtocolError:
            if self.conn.state is State.CLOSED:
                logger.error("the handler's reply %s comes after the session closed", reply)
                return fallback
            if log_refusal:
                logger.exception("the handler's reply %s is not legal here", reply)
            reply = fallback
            data = self.conn.send(reply)
        out = self._out
        if out is None:
            out = self._out = []
        out.append(data)
        return reply

    def _write_due_now(self) -> None:
        """Write the replies due, as far as the kernel takes them without waiting; the
        rest stays due, and a failed write is met again by the next one (which ends
        the session): for a caller that must not wait here."""
        out = self._out
        if out is None:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        try:
            sent = self.transport.send_nowait(data)
        except OSError:
            return
        self._out = [data[sent:]] if sent < len(data) else None
