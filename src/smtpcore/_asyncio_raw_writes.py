"""The asyncio server's raw-socket transport's writes: to the kernel at once, and
what it does not take kept until the socket has room.

A layer of :class:`~smtpcore._asyncio_raw.RawSocketTransport` (see
:class:`~smtpcore._asyncio_raw_watch.SelectorWatch`, beneath it): the
session's writes (:meth:`WritingLayer.send_all`, held for the loop's next
pass by :class:`~smtpcore._asyncio_raw_held.HeldWrites`), the end of the
sending side, and what the TLS layer above writes its records through. Apart
because every rule about bytes written and not yet taken (its bound, its
order behind a held reply, a lost connection while it waits) is here.
"""

from __future__ import annotations

import socket
from typing import ClassVar, Final

from smtpcore._asyncio_raw_watch import _NOTHING, _ROOM, SelectorWatch, _Future, _write
from smtpcore._asyncio_runner import WOKEN
from smtpcore._driver._kernel_queues import unacknowledged as kernel_unacknowledged

_HOLD_AT_MOST: Final = 16384
"""At most this many bytes of a connection wait for the loop's next pass (see
:class:`~smtpcore._asyncio_raw_held.HeldWrites`): a write that would hold more
(a POP3 message's content, say) goes at once, after what waits, and meets the
kernel's back-pressure as any write does. Replies are smaller by far."""


class WritingLayer(SelectorWatch):
    """What the session and the TLS layer above write, and the waits for room."""

    __slots__ = ()

    def send_nowait(self, data: bytes) -> int:
        """Write what the kernel takes at once; how much that was."""
        inner = self._inner
        if inner is not None:
            return inner.send_nowait(data)
        if self._lost or self._closing:
            raise ConnectionResetError("the connection is closed")
        if self._out is not None:  # behind what waits already
            return 0
        writes = self._writes
        if writes is not None and self._loop._ready:  # type: ignore[attr-defined]  # see HeldWrites
            # Others run in this pass: written after them, within a bound.
            held = self._held
            if (0 if held is None else len(held)) + len(data) <= _HOLD_AT_MOST:
                return writes.hold(self, data)
            if held is not None:  # too much to hold: what waits goes first, now
                self._write_held()
                if self._lost:
                    raise ConnectionResetError("the connection was lost while writing")
                if self._out is not None:  # the kernel did not take all of it
                    return 0
        try:
            return _write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            self._lose()
            raise

    def _write_held(self) -> None:
        """Write what :attr:`_writes` holds for this connection, now; what the kernel
        does not take waits for room (as :meth:`send_all`'s rest does, whether or
        not the session awaits it)."""
        data = self._held
        if data is not None:
            self._held = None
            self._write_now(data)

    def _write_now(self, data: bytes) -> None:
        """Write ``data`` now; what the kernel does not take waits in ``_out``, the
        socket watched for room. A failed write loses the connection."""
        try:
            sent = _write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._lose()
            return
        if sent < len(data):
            self._out = bytearray(memoryview(data)[sent:])
            self._watch_for_room()

    # -- for a layer above (the TLS layer: its records and its failures) -------------

    def is_closing(self) -> bool:
        """Whether the connection is lost or being closed: nothing more may be written
        (a layer's unasked answers are then dropped, not raised)."""
        return self._lost or self._closing

    def abandon(self, last_words: bytes) -> None:
        """A layer above cannot go on (its TLS failed): write ``last_words`` (the alert
        OpenSSL wrote) if nothing waits before them and the kernel takes them at
        once, and drop the connection as a reset does: nothing more is read or
        written, and a session that waits wakes. Nothing waits here: the words are
        a courtesy to a peer the connection is being dropped on."""
        if self._lost or self._closing:
            return
        if last_words and self._out is None and self._held is None:
            try:  # noqa: SIM105 - a courtesy; the connection is being dropped
                self._sock.send(last_words)
            except OSError:
                pass
        self._lose()

    def write_soon(self, data: bytes) -> None:
        """Take all of ``data``, after what waits already, without waiting: written now as
        far as the kernel takes it, the rest as the socket has room (the TLS layer's
        records, which cannot be taken back in part)."""
        if self._lost or self._closing:
            raise ConnectionResetError("the connection is closed")
        if self._held is not None:
            self._write_held()
        out = self._out
        if out is None:
            self._write_now(data)
        else:
            out += data
        if self._lost:
            raise ConnectionResetError("the connection was lost while writing")

    def unsent(self) -> int:
        """How many bytes written wait for room in the socket: the TLS layer writes no
        more records while some do (its bound on what a client that never reads
        holds here), and reads no more while too many do."""
        out = self._out
        return 0 if out is None else len(out)

    def waiting_to_send(self) -> int:
        """The bytes written that wait for room in the socket (see
        :mod:`smtpcore.transport`): the rest of a held write the kernel did not take,
        which waits here while the session reads; under TLS, the layer's records.
        Not a reply still held for the loop's next pass, which has yet to be tried."""
        inner = self._inner
        if inner is not None:
            return inner.waiting_to_send()
        return self.unsent()

    def unacknowledged(self) -> int | None:
        """The bytes the kernel sent or holds that the client has not acknowledged (see
        :meth:`~smtpcore._driver._transport.LinkBase.unacknowledged`), on the
        connection's socket, under TLS too; None where the kernel cannot say."""
        return kernel_unacknowledged(self._sock)

    async def all_sent(self) -> None:
        """Wait until the kernel has taken every byte written, or the connection is lost
        (the TLS layer's wait for room, before it reads more)."""
        await self._sent()

    keeps_cancelled_sends: ClassVar[bool] = True
    """A cancelled :meth:`send_all` loses nothing: what the kernel has not taken waits
    here, written as the socket has room, and the TLS layer encrypts all it is given
    before it waits (see :mod:`smtpcore.transport`)."""

    async def send_all(self, data: bytes) -> None:
        inner = self._inner
        if inner is not None:
            await inner.send_all(data)
            return
        if self._lost or self._closing:
            raise ConnectionResetError("the connection is closed")
        held = self._held
        if held is not None:  # what waits for the loop's next pass goes first
            self._held = None
            data = held + data
        out = self._out
        if out is None:
            self._write_now(data)
            if self._lost:
                raise ConnectionResetError("the connection was lost while writing")
            if self._out is None:  # all of it went
                return
        else:
            out += data
        await self._sent()
        if self._lost:
            raise ConnectionResetError("the connection was lost while writing")

    async def send_eof(self) -> None:
        """Shut down the sending side once everything written has gone (the held reply
        first): the client reads the last reply, then the end. Under TLS, nothing
        (see :meth:`TLSLayer.send_eof <smtpcore._asyncio_tls.TLSLayer.send_eof>`)."""
        inner = self._inner
        if inner is not None:
            await inner.send_eof()
            return
        if self._lost or self._closing:
            raise ConnectionResetError("the connection is closed")
        self._write_held()
        if self._out is not None:
            await self._sent()
        if self._lost:
            raise ConnectionResetError("the connection was lost while writing")
        self._sock.shutdown(socket.SHUT_WR)

    async def _sent(self) -> None:
        """Wait until the kernel has taken everything written, or the connection is lost."""
        self._watch_for_room()
        while self._out is not None and not self._lost:
            self._want = _ROOM
            runner = self._runner
            waiter = None
            try:
                if runner is not None and runner.task is None:
                    await WOKEN
                else:
                    waiter = self._waiter = _Future(loop=self._loop)
                    await waiter
            finally:
                # This wait alone: another begun meanwhile (a close's, while a cancelled
                # wait for room unwinds) keeps its own, or nothing would wake it.
                if self._waiter is waiter and self._want == _ROOM:
                    self._want = _NOTHING
                    self._waiter = None
