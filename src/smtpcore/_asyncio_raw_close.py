"""The asyncio server's raw-socket transport's close: the last bytes, then the
socket, and a full server's refusal.

A layer of :class:`~smtpcore._asyncio_raw.RawSocketTransport` (see
:class:`~smtpcore._asyncio_raw_watch.SelectorWatch`, beneath it). Apart
because a close is the one place where a read waiting in another task, a
write waiting for room and the close's own timeout meet, and the order they
are settled in is the whole of it (see :meth:`ClosingLayer._end_reads`).
"""

from __future__ import annotations

from typing import ClassVar

from smtpcore._asyncio_raw_writes import WritingLayer
from smtpcore._driver import _transport as shared_transport


class ClosingLayer(WritingLayer):
    """Every close of a connection: at once when nothing waits to be sent, else once
    the kernel has taken it or the close timeout has passed."""

    __slots__ = ()

    closes_when_cancelled: ClassVar[bool] = True
    """A cancelled :meth:`aclose` still closes the socket (its wait for the kernel to take
    the last bytes ends in ``finally``; see :mod:`smtpcore.transport`)."""

    async def aclose(self) -> None:
        """Close the socket, then the clock (as :meth:`Link.aclose` does)."""
        clock = self._runner
        if self._held is not None:  # the last reply, nearly always: before the close
            self._write_held()
        if self._out is None and self._inner is None and not self._closing:
            # Every connection's close, written out: nothing waits to be sent.
            self._closing = self._eof = True
            waiter = self._waiter
            if waiter is not None and self._want > 0 and not waiter.done():
                waiter.set_result(None)  # see _end_reads
            if self._reading:
                self._unwatch_reads()
            if self._writing:  # pragma: no cover - only while something waits to be sent
                self._writing = False
                self._loop.remove_writer(self._fd)
            self._sock.close()
            self._fd = -1
            if clock is not None:
                clock.close()
            return
        try:
            await self.close_when_sent()
        finally:
            if clock is not None:
                clock.close()

    async def close_when_sent(self) -> None:
        """Close the socket once the kernel has taken what is left to send, or after
        the close timeout; under TLS, the TLS layer's close (its ``close_notify``
        first). Unlike :meth:`aclose` it leaves the session's clock alone: the TLS
        layer closes the transport beneath it so, whose clock is the session's."""
        inner = self._inner
        if inner is not None:
            await inner.aclose()  # it closes the socket
            return
        if self._closing:
            return
        self._closing = True
        self._end_reads()
        # The last bytes wait for the kernel (a lost connection has none): a peer that
        # never takes them is cut off after CLOSE_TIMEOUT.
        if self._reading:
            self._unwatch_reads()
        timer = self._loop.call_later(shared_transport.CLOSE_TIMEOUT, self._lose)
        try:
            await self._sent()
        finally:
            timer.cancel()
            self._close_socket()

    def _end_reads(self) -> None:
        """A close has begun: every read from now on gives the end of the stream
        (``_eof``), and one waiting in another task wakes to it, before the close
        takes the transport's one wait (``_want``, ``_waiter``) for its own wait
        for room. A read begun meanwhile would have taken it back, and nothing would
        have woken the close, neither room nor its timeout."""
        self._eof = True
        waiter = self._waiter
        if waiter is not None and self._want > 0 and not waiter.done():
            waiter.set_result(None)  # the read asks again, and is told the end

    def _close_socket(self) -> None:
        self._unwatch()
        self._out = self._held = None
        self._sock.close()
        self._fd = -1

    def refuse(self, reply: bytes) -> None:
        """Write ``reply`` as far as the kernel takes it at once, and close (the server
        is full)."""
        self._closing = True
        if reply:
            try:  # noqa: SIM105 - contextlib.suppress costs three calls a connection
                self._sock.send(reply)
            except OSError:
                pass
        self._close_socket()
