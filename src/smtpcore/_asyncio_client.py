"""How the asyncio SMTP and POP3 clients get their connection, and read its replies.

The clients themselves are the driver's (:mod:`smtpcore._driver`); what is
asyncio's is the connection (TCP on the socket itself, a Unix socket, a given
stream pair or transport) and the clock of a client's link, which reads each
reply on the transport's own future for its next bytes. Apart from the public
module, which only names the clients.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Concatenate, TypeVar

from smtpcore._asyncio_alarm import OffLoopTimers
from smtpcore._asyncio_client_socket import SocketClientTransport, connect_socket
from smtpcore._asyncio_clock import AsyncioClock, Deadline
from smtpcore._asyncio_stream import StreamTransport
from smtpcore._asyncio_transport import _READ_SIZE, AsyncioTransport
from smtpcore._driver._client_constructors import ClientConstructors, Options
from smtpcore._driver._transport import BoundLink, Link
from smtpcore.transport import Transport

__all__ = ["_AsyncioClient", "_ClientClock", "_client_link", "_connect"]


class _ClientClock(AsyncioClock):
    """The clock of a client's connection, which reads a reply by awaiting the
    transport's :meth:`~AsyncioTransport.next_bytes` future directly: no coroutine
    around the wait and no cancellation of the task. When the read is due, the
    connection's timer (see :class:`~smtpcore._asyncio_clock.AsyncioClock`) fails
    that future with ``TimeoutError``; a read that has its bytes by then keeps them.

    The connection's timer is its own and off the loop (see
    :mod:`smtpcore._asyncio_alarm`): the loop's passes, one a reply, do not
    work out a timeout for it."""

    __slots__ = ("_read", "_read_due")

    def __init__(self) -> None:
        super().__init__(OffLoopTimers(asyncio.get_running_loop()))
        self._read: asyncio.Future[bytes] | None = None
        """The future of the read under way, until its bytes come or it is due."""
        self._read_due = 0.0

    def timed_reader(
        self, receive: Callable[[int], Awaitable[bytes]]
    ) -> Callable[[float | None, int], Awaitable[bytes]]:
        reader = super().timed_reader(receive)
        transport = getattr(receive, "__self__", None)
        if not isinstance(transport, (AsyncioTransport, SocketClientTransport)):
            return reader
        return functools.partial(self._read_reply, transport.next_bytes, reader)

    def _read_reply(
        self,
        next_bytes: Callable[[], asyncio.Future[bytes] | None],
        reader: Callable[[float | None, int], Awaitable[bytes]],
        seconds: float | None,
        max_bytes: int,
    ) -> Awaitable[bytes]:
        """``receive_within(seconds, max_bytes)``: the transport's future for its next
        bytes, due in ``seconds``; through ``reader`` (a read under a deadline) where
        the transport has none to give, or no time limit or a short read is asked."""
        if seconds is None or max_bytes < _READ_SIZE:
            return reader(seconds, max_bytes)
        future = next_bytes()
        if future is None:
            return reader(seconds, max_bytes)
        self._read = future
        self._read_due = due = self._timers.now() + seconds
        queued = self.queued
        if queued is None or queued > due:  # rarely: the next ring falls before it
            self._timers.add(self, due)
        return future

    def close(self) -> None:
        super().close()
        self._timers.close()  # the connection's own (see __init__)

    def ring(self, now: float) -> None:
        super().ring(now)  # the deadlines' share, which may queue the clock again
        read = self._read
        if read is None:
            return
        due = self._read_due
        if read.done():
            self._read = None
        elif now >= due:
            self._read = None
            read.set_exception(TimeoutError("the read is due"))
        else:
            queued = self.queued
            if queued is None or queued > due:
                self._timers.add(self, due)


def _client_link(transport: Transport) -> Link:
    """A client's link: its clock reads replies on the transport's futures."""
    return BoundLink(transport, _ClientClock())


async def _connect(
    timeout: float | None, host: str, port: int, unix_path: str | None
) -> AsyncioTransport | SocketClientTransport:
    """A client's connection: TCP to ``host`` and ``port`` on the socket itself (see
    :mod:`smtpcore._asyncio_client_socket`), or the Unix socket."""
    loop = asyncio.get_running_loop()
    async with Deadline(timeout):
        if unix_path is not None:
            _, protocol = await loop.create_unix_connection(AsyncioTransport, unix_path)
            return protocol
        return SocketClientTransport(await connect_socket(host, port))


_Client = TypeVar("_Client", bound=ClientConstructors)


class _AsyncioClient(ClientConstructors):
    """How the asyncio SMTP and POP3 clients get their connection."""

    @classmethod
    def over_stream(
        cls: Callable[Concatenate[str, int | None, Options], _Client],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str = "localhost",
        *args: Options.args,
        **options: Options.kwargs,
    ) -> _Client:
        """over_stream(reader: StreamReader, writer: StreamWriter, *, host: str = "localhost", **options)

        A client whose session runs over an asyncio stream pair (see
        :class:`StreamTransport`); keywords as for :meth:`over_transport`."""  # noqa: E501 (the signature autodoc shows)
        client = cls(host, None, *args, **options)
        client._given = StreamTransport(reader, writer)
        return client

    def _current_task(self) -> object:
        return asyncio.current_task()

    async def _open(self, host: str, port: int) -> Link:
        given = self._take_given()
        if given is not None:
            return _client_link(given)
        return _client_link(await _connect(self.timeouts.connect, host, port, self._unix_path))
