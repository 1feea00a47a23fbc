"""A trio server's replies held to the end of the scheduler's batch, and written together.

What :class:`smtpcore._asyncio_raw.HeldWrites` does for the asyncio server,
with trio's hook for it: an instrument's ``before_io_wait``, which trio calls
once every task that was ready has taken its step, just before it waits for
the sockets again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from smtpcore.trio import TrioTransport

HOLD_AT_MOST: Final = 16384
"""The bytes a connection may hold: a larger write goes at once (a POP3 message's
content among other sessions' replies must not gather in memory)."""


class HeldWrites(trio.abc.Instrument):
    """A server's replies written while other connections write in the same batch of
    trio's scheduler: held, and written one after another at the batch's end.

    A reply wakes its client, and the kernel makes the wake-up within the write.
    A client that serves many connections at once (a relay, Postfix's
    ``smtp-source``) sleeps again between a server's replies, which are tens of
    microseconds of Python apart, and every reply paid the wake-up: about a
    fifth of the trio server's time under ``smtp-source -s 20``. Written
    together, the replies of one batch wake the client once.

    Only while more than one reply is written a batch: in a batch where another
    has been written (or held) already, or after a batch of several. A session
    alone with its client writes at once, as before (held, its reply went out
    later than the session's wait for the next command began, and the exchange
    slowed down). And only up to :data:`HOLD_AT_MOST` bytes a connection. A held
    reply is written before anything else of its connection's
    (:meth:`TrioTransport.send_all <smtpcore.trio.TrioTransport.send_all>`,
    the close, the TLS handshake). What the kernel does not take at the
    batch's end is written by a task of the server's (``spawn``), which waits
    for room while the session may wait for its client.
    """

    __slots__ = ("_busy", "_due", "_spawn", "_writers")

    def __init__(self, spawn: Callable[..., object]) -> None:
        self._spawn = spawn
        """Starts a task of the server's: its nursery's ``start_soon``."""
        self._due: list[TrioTransport] = []
        """The transports whose ``_held`` bytes wait for the batch's end."""
        self._writers = 0
        """Writes made or held in this batch so far."""
        self._busy = False
        """Whether the last batch had more than one write."""

    def holds(self) -> bool:
        """Whether a write now is held: another was made in this batch, or the last
        batch had several (counted as this one, whether held or not)."""
        self._writers += 1
        return self._busy or self._writers > 1

    def hold(self, transport: TrioTransport, data: bytes) -> int:
        """Hold ``data`` to be written after what ``transport`` holds already; how much
        was taken (all of it, as a write that the kernel took whole)."""
        held = transport._held
        if held is None:
            transport._held = data
            self._due.append(transport)
        else:
            transport._held = held + data
        return len(data)

    def spawn(self, task: Callable[..., object], *args: object) -> None:
        """Start ``task(*args)`` as a task of the server's."""
        self._spawn(task, *args)

    def before_io_wait(self, timeout: float) -> None:
        """The batch's end: write what each transport holds, in the order they held it."""
        self._busy = self._writers > 1
        self._writers = 0
        if self._due:
            transports = self._due
            self._due = []
            for transport in transports:
                transport._write_held()
