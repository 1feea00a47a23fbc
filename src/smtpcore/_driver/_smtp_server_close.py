"""How an SMTP server session ends: its last reply, and the handler told.

:class:`SessionClose` holds what :class:`~smtpcore._driver._served_session.ServedSession`
asks of a protocol at the end: the last words (``421`` when the watchdog went
off or the server is shutting down, unless a write was cut part-way), the
``connection_factory``'s machine given back, and ``handle_reset`` and
``handle_close`` told after the transport is closed, only to a handler that
was told of the session.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Final

from smtpcore._driver._connection_lost import ConnectionLost
from smtpcore._driver._smtp_server_transaction import Transaction
from smtpcore.smtp import Reply, State

_ERROR_STATE: Final = State.ERROR
"""A global: a member read through its enum class costs the class's __getattr__ hook."""


class SessionClose(Transaction):
    """The end of the session: what it says last, and what the handler is told."""

    __slots__ = ()

    _connect_told: bool
    _waited_idle: bool

    def _after_close(self) -> Awaitable[None] | None:
        """``handle_close`` only for a session whose ``handle_connect`` was asked (or
        answered by Handler's own): handlers pair the two, as aiosmtpd's count
        sessions or open a resource for one, and a session refused before its
        greeting (a factory's machine, a PROXY header, TLS on connect) is one the
        handler never saw."""
        if not self._connect_told:
            return None
        # Handler's own handle_close does nothing: most sessions need no coroutine here.
        if self.session.envelope is None and "handle_close" not in self.state.overridden:
            return None
        return self._tell_closed()

    async def _tell_closed(self) -> None:
        self._out = None  # nothing more reaches the client
        await self._tell_handler_closed()

    async def _tell_handler_closed(self) -> None:
        """End, for the handler, the session it was told of: ``handle_reset`` for a
        transaction left open, then ``handle_close``. At the connection's close, and
        at a trusted XCLIENT, which starts the named client's session on it."""
        if self.session.envelope is not None:
            await self._end_transaction()
        if "handle_close" in self.state.overridden:
            await self._call("handle_close", (self.session,))

    async def _ended(self) -> None:
        """Give the factory's machine back while the session still holds it (see
        :class:`~smtpcore._driver._factory.MachinesInUse`)."""
        if self.options.connection_factory is not None:
            self.state.factory_machines.give_back(self.conn)

    async def _close(self, timed_out: bool) -> bool:
        if self._write_cut:
            # The client may hold part of a reply (see ServedSession._write_cut): a 421
            # would land inside it. The close alone ends the session, lingered on as
            # after a 421 when the watchdog went off.
            self._out = None
            return timed_out
        if timed_out:
            if self.state.stopping and (self._waited_idle or self.state.cutting_off):
                reply = Reply(421, f"{self.options.hostname} Service shutting down", "4.3.2")
            else:
                reply = Reply(421, f"{self.options.hostname} Timeout exceeded", "4.4.2")
            self._answer(reply)
        # The server ends the session on its own after a protocol error (the ERROR
        # state), or with 421, the one code it closes with unasked (RFC 5321 §3.8): not
        # after QUIT's 221, nor the replies before the client's own close.
        out = self._out
        hung_up = (out is not None and out[-1][:3] == b"421") or self.conn.state is _ERROR_STATE
        try:
            rest = self._flush()
            if rest is not None:
                await rest
        except TimeoutError:
            raise ConnectionLost from None
        return hung_up
