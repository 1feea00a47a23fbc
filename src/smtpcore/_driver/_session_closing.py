"""How a server session's connection closes: lingering after the server's own
goodbye, and without waiting for room a client did not make for a write.

A part of :class:`~smtpcore._driver._served_session.ServedSession` (a base class of
it, holding no fields: a method costs the same wherever in its bases it is),
apart from the session's life: what the close waits for, and for how long, is
the same for SMTP and POP3 and both adapters, and turns on the transport's
answers and on the session's last write
(:attr:`~smtpcore._driver._served_session.ServedSession._write_unfinished`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Final

from smtpcore._driver._session_registry import SessionRegistry
from smtpcore._driver._shutdown import LAST_WORDS
from smtpcore._driver._transport import Link

__all__ = ["LINGER", "LINGER_BYTES", "SessionClosing"]

LINGER: Final = 1.0
"""Seconds at most that a session the server ends on its own reads and drops what its
client still sends, before it closes (see :meth:`SessionClosing._linger`); Apache's
lingering close waits 2 seconds a read. While the server shuts down, half of
:data:`LAST_WORDS`, so that a session cut off closes within its last words."""
LINGER_BYTES: Final = 1 << 22
"""Octets at most that a lingering session reads and drops (the CPU a client that
streams without pause can take from it)."""
_LINGER_READ: Final = 65536


class SessionClosing:
    """The close of a served session's connection, once the session has said its last."""

    __slots__ = ()

    transport: Link
    state: SessionRegistry[Any]
    _write_unfinished: bool

    async def _close_transport(self) -> None:
        """Close the transport; after a write the client did not take in its time
        (:attr:`_write_unfinished`, or bytes left waiting at a timeout), without
        waiting for room to send what is left, where a cancelled close still closes
        (the transport's ``closes_when_cancelled``:
        :meth:`~smtpcore._driver._transport.LinkBase.cancelled_close_closes`). Room
        that did not come in the write's timeout will not come in the transport's
        close timeout either, which would hold the session (and its place under the
        session limits) for that long again. The close is cancelled as it first
        waits: the asyncio transports abort the connection then; trio's drops what
        it still holds for the end of trio's scheduler batch (what the kernel takes
        at once aside), or the rest of a held write another task was finishing,
        and closes its stream, shielded. Any other transport closes as it
        does, within the bound it sets itself: cancelled, one that gives up waiting
        and then aborts would never abort, and the connection would stay open.
        Nor while the server stops: a write its shutdown cut off still gets the
        transport's close to send what it kept, within the shutdown's own cut-off
        rounds (see :mod:`smtpcore._driver._shutdown`), as before."""
        transport = self.transport
        if (
            not self._write_unfinished
            or self.state.stopping
            or not transport.cancelled_close_closes()
        ):
            await transport.aclose()
            return
        with contextlib.suppress(TimeoutError):
            async with transport.deadline(0):
                await transport.aclose()

    async def _linger(self) -> None:
        """Close gracefully after the server's own goodbye: half-close (the transport's
        ``send_eof``, where it can), then read and drop what the client still sends,
        until it closes too, for :data:`LINGER` seconds and :data:`LINGER_BYTES`
        at most (Apache's lingering close).

        A socket closed with bytes of its peer unread is reset (RFC 1122 §4.2.2.13),
        and a reset makes the client's kernel drop what it had not read yet: the
        421 that RFC 5321 §3.8 has the server send before it closes, when the client
        pipelined commands behind the one that ended the session, or a chunk's
        content. Half-closed, the client reads the reply and then the end."""
        transport = self.transport
        left = LINGER_BYTES
        with contextlib.suppress(OSError, TimeoutError):
            async with transport.deadline(LAST_WORDS / 2 if self.state.stopping else LINGER):
                await transport.send_eof()
                while left > 0:
                    data = await transport.receive_to_drop(min(left, _LINGER_READ))
                    if not data:
                        break
                    left -= len(data)
