"""A server's accepted connections on asyncio, served over the raw socket.

asyncio's socket transport is most of what a short SMTP connection costs on
asyncio: an accept task and its waiter future, a transport object with its
own buffers and dictionary, the callbacks it queues to start and to close,
and three calls into it for every read (about 166 Python calls and 1.5 KB a
connection before any SMTP). A server's connection needs little of that:
its session reads when it waits for its client and writes a reply that
nearly always fits in the kernel's buffer. So, on the standard library's
selector event loop, a server accepts its connections itself from the
loop's selector (:class:`Acceptor`, ``loop.add_reader`` on the listening
sockets) and serves each over the socket (:class:`RawSocketTransport`):
``recv`` when the selector says the client has sent something, ``send``
straight to the kernel, and the loop's selector again for what the kernel
does not take at once. TLS (STARTTLS, STLS, a listener's TLS from the first
byte) runs over the same reads and writes (:mod:`smtpcore._asyncio_tls`),
not asyncio's TLS transport and its 256 KiB buffer a connection.

Any other event loop (the proactor loop on Windows, which has no
``add_reader``; uvloop, whose transports are not Python) keeps asyncio's
transports.

This module holds :class:`RawSocketTransport` with its fields, its reads, its
link's methods and its hand-off to TLS; the rest is in modules of one job
each: the transport in the loop's selector and the fields every layer shares
(``_asyncio_raw_watch``), its writes (``_asyncio_raw_writes``), its close
(``_asyncio_raw_close``), the loop's held replies (``_asyncio_raw_held``) and
the listening sockets (``_asyncio_raw_accept``). Each layer is a base class
of the transport with no slot of its own, so a connection is as small as it
was and a method costs what it did.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
import ssl
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import CoroutineType
from typing import TYPE_CHECKING

from smtpcore._asyncio_raw_accept import Acceptor, listening_sockets
from smtpcore._asyncio_raw_close import ClosingLayer
from smtpcore._asyncio_raw_held import HeldWrites
from smtpcore._asyncio_raw_watch import _NOTHING, _T, SelectorWatch, _Future, _read, resolve_now
from smtpcore._asyncio_runner import WOKEN, SessionRunner
from smtpcore._asyncio_tls import TLSLayer
from smtpcore._driver._timeouts import (
    Clock,
    Deadline,
    Watchdog,
    deadline_when_waiting,
    finish_when_waiting,
    new_pump,
    rest_of,
    rest_pumped,
)
from smtpcore._driver._transport import Link, LinkBase, address
from smtpcore.handler import TLSInfo

__all__ = [
    "Acceptor",
    "HeldWrites",
    "RawSocketTransport",
    "listening_sockets",
    "resolve_now",
    "serves_raw",
]

enabled = True
"""Whether servers on a selector event loop serve their connections over the raw
socket (the tests turn it off to run the fallback, asyncio's transports, on Linux)."""


def serves_raw(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is one whose socket transports this module stands in for: the
    standard library's selector event loop (Python transports, and ``add_reader``),
    with the selector it watches sockets through (``_selector``, whose keys' data are
    the reader's and the writer's handles, see :class:`RawSocketTransport`): a
    Python whose loop no longer has it serves through asyncio's transports."""
    return (
        enabled
        and os.name == "posix"  # a socket's descriptor is a file's (see _read)
        and isinstance(loop, asyncio.SelectorEventLoop)
        and isinstance(getattr(loop, "_selector", None), selectors.BaseSelector)
    )


if TYPE_CHECKING:
    _OwnLink = Link  # to type checkers, the link it is (see the class)
else:
    _OwnLink = LinkBase


class RawSocketTransport(ClosingLayer, _OwnLink):  # type: ignore[misc]  # see FIELDS
    """A :class:`~smtpcore.transport.Transport` over an accepted socket, on the loop's
    selector; given the session's clock, also the session's own
    :class:`~smtpcore._driver._transport.Link`.

    Being its own link spares every connection a link object and the bound
    methods the link would keep for its reads and writes (about 220 bytes an
    idle session), and a call for each of the link's methods and properties
    that would only hand on to the transport's. It derives from
    :class:`~smtpcore._driver._transport.LinkBase`, not from ``Link``: a
    ``Link``'s slots for the transport's bound methods would stay empty here,
    where those are the class's own methods (48 bytes a connection), and its
    ``__getattr__`` would slow every read of the transport's own fields. The
    clock's methods a link has (:meth:`deadline`, :meth:`within`) hand on to
    the clock, once a hook or a write that waits. To type checkers it is a
    ``Link``, which it stands in for.

    Reads: the socket is watched for reads while the session waits for its
    client, and the callback wakes the session (its
    :class:`~smtpcore._asyncio_runner.SessionRunner`, or the future its task
    awaits), which then reads what came with one ``recv``, of at most what it
    asked for, so an exact read (a PROXY header) leaves what follows in the
    kernel. When nothing waits for the client's bytes, they stay in the
    kernel (TCP's own flow control) and the socket is no longer watched
    until the session reads again.

    Writes go to the kernel at once; what it does not take waits here, the
    socket watched for room, and :meth:`send_all` returns once all of it has
    gone: a client that never reads holds at most one write's bytes here,
    and the session's deadline ends the wait.

    :meth:`start_tls` puts a TLS layer (:class:`~smtpcore._asyncio_tls.TLSLayer`)
    between the session and the socket, over a transport of this class beneath
    it, for the rest of the connection.

    The transport is its own reader handle in the loop's selector. For every
    watched descriptor the selector loop keeps a pair, the handle it runs when
    the descriptor can be read and the one for when it can be written, and a
    handle is anything with ``_cancelled`` and ``_run()`` (what
    ``_process_events`` and ``_run_once`` read, the same from Python 3.10 to
    3.13). Registered as the reader itself (:meth:`_watch_reads`), the transport
    spares each connection the ``asyncio.Handle`` that ``add_reader`` makes, the
    copy of the context it keeps and the bound method it calls (about 220 bytes
    an idle session, and three calls a connection), and each read the
    handle's ``_run`` (a call). Watching for room to write is rare and goes
    through ``add_writer``, which keeps the transport as the reader beside the
    writer's handle.

    On a selector over a poll object (``epoll``, Linux's default), the transport
    is also its own key in the selector while it is watched for reads alone:
    what the selector and the loop read of a key (``fileobj``, ``fd``,
    ``events``, ``data`` and, to change it, ``_replace``), it has, the first two
    its descriptor's slot. That spares each watched connection the
    ``SelectorKey`` (80 bytes an idle session), and ``register`` and
    ``unregister`` their Python calls (five and four). Once a writer is watched
    too, the selector's ``modify`` puts a ``SelectorKey`` of its own in its place.
    """

    # Neither Link's methods' slots nor its fields' (see clock and transport).
    if TYPE_CHECKING:  # SelectorWatch's, where the type checker sees them
        __slots__ = ()
    else:
        __slots__ = SelectorWatch.FIELDS

    def __init__(
        self,
        sock: socket.SocketType,
        peer: object,
        loop: asyncio.AbstractEventLoop,
        runner: SessionRunner | None = None,
        local: tuple[str, int] | None = None,
        writes: HeldWrites | None = None,
    ) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        # An IPv4 address as address() would keep it, without the call: every connection.
        self.peer_address: tuple[str, int] | None = (
            peer if type(peer) is tuple and len(peer) == 2 else address(peer)
        )
        self._local = local
        """The local address, where the listener knows it (one tuple for all its
        connections); else the socket is asked."""
        self._loop = loop
        self._runner = runner
        """What steps the session while no task runs it (its waits are then no futures),
        and its clock; None: a transport alone (tests), which has no clock."""
        self._reading = False
        """Whether the loop's selector watches the socket for reads."""
        self._writing = False
        """Whether the loop's selector watches the socket for room to write."""
        self._want = _NOTHING
        """What the session waits for: at most so many bytes from the client (a
        positive number), :data:`~smtpcore._asyncio_raw_watch._ROOM` to write, or
        :data:`~smtpcore._asyncio_raw_watch._NOTHING`."""
        self._waiter: asyncio.Future[bytes | None] | None = None
        """The future the session's task awaits while it waits (a runner needs none):
        its result is the bytes read for it (see :meth:`_run`), or ``None``."""
        self._more = True
        """Whether a read may find bytes without waiting: the last one filled what it
        asked for, or the selector said so. (True at first: nothing was read yet.)"""
        self._out: bytearray | None = None
        """What the kernel has not taken yet of the last write."""
        self._writes = writes
        """Where a write waits for the loop's next pass while others run in this one
        (see :class:`~smtpcore._asyncio_raw_held.HeldWrites`); None: every write at once."""
        self._held: bytes | None = None
        """What waits in :attr:`_writes` to be written."""
        self._eof = False
        self._lost = False
        self._closing = False
        self._inner: TLSLayer | None = None
        """The TLS layer serving the connection since :meth:`start_tls`."""
        self.data: tuple[RawSocketTransport, None] | None = None
        """As the selector's key: the reader's handle and the writer's (see the class)."""

    # -- the link's fields, and its methods of the clock --------------------------

    @property
    def clock(self) -> Clock:  # type: ignore[override]  # the link it stands in for
        """The link's clock: the runner (see the class). Link's fields are
        properties here, not slots (8 bytes each an idle session): nothing on a
        connection's path reads them, the methods below read the runner."""
        return self._runner  # type: ignore[return-value]  # None: a transport alone

    @property
    def transport(self) -> RawSocketTransport:  # type: ignore[override]
        """The link's transport: itself."""
        return self

    def deadline(self, seconds: float | None) -> AbstractAsyncContextManager[Deadline]:
        return self._runner.deadline(seconds)  # type: ignore[union-attr]  # see clock

    def within(self, seconds: float | None, call: Awaitable[_T]) -> Awaitable[_T]:
        runner = self._runner
        if runner.task is None:  # type: ignore[union-attr]  # see clock
            return runner.within(seconds, call)  # type: ignore[union-attr]
        # What the runner's own does in a task, without its call: a hook is the hot path.
        return deadline_when_waiting(runner.deadline, seconds, call)  # type: ignore[union-attr]

    def start_within(
        self, seconds: float | None, call: Awaitable[_T]
    ) -> tuple[_T] | Awaitable[_T]:
        runner = self._runner
        if runner.task is None:  # type: ignore[union-attr]  # see clock
            return runner.within(seconds, call)  # type: ignore[union-attr]  # into a task
        # The first step of deadline_when_waiting, without its coroutine: a hook of
        # every message, which most often answers at once. In the server's pump, lent
        # to this call alone, where it answers without a StopIteration (see new_pump).
        timers = runner._timers  # type: ignore[union-attr]  # see clock
        pump = timers.pump
        if pump is None or type(call) is not CoroutineType:  # lent, or none: without
            steps = call if type(call) is CoroutineType else call.__await__()
            try:
                waiting_on = steps.send(None)
            except StopIteration as done:
                return (done.value,)
            rest: Awaitable[_T] = rest_of(steps, waiting_on)
        else:
            timers.pump = None
            try:
                waiting_on = pump.send(call)
            except BaseException:
                timers.pump = new_pump()  # the call's exception ended this one
                raise
            if pump.gi_yieldfrom is None:  # answered: the pump is idle again
                timers.pump = pump
                return (waiting_on,)
            timers.pump = new_pump()  # this one stays with its call
            rest = rest_pumped(pump, waiting_on)
        return finish_when_waiting(runner.deadline, seconds, rest)  # type: ignore[union-attr]

    def watchdog(self) -> AbstractAsyncContextManager[Watchdog]:
        return self._runner.watchdog()  # type: ignore[union-attr]  # see clock

    async def receive_within(self, seconds: float | None, max_bytes: int) -> bytes:
        async with self._runner.deadline(seconds):  # type: ignore[union-attr]  # see clock
            return await self.receive_some(max_bytes)

    # -- Transport ------------------------------------------------------------------

    async def receive_some(self, max_bytes: int) -> bytes:
        waiter = None
        try:
            while True:
                got = self.receive_or_wait(max_bytes)
                if isinstance(got, bytes):
                    return got
                waiter = self._waiter
                data = await got
                if data is not None:
                    return data
        finally:
            # This read's wait alone: a cancelled read unwinds a pass after its cancel,
            # when a close may have begun its own wait for room (see _sent).
            if self._waiter is waiter and self._want > 0:
                self._want = _NOTHING
                self._waiter = None

    receive_to_drop = receive_some
    """The linger's read (see :class:`~smtpcore._driver._transport.LinkBase`): any read."""

    def receive_or_wait(self, max_bytes: int) -> bytes | Awaitable[bytes | None]:
        """What the client has sent (at most ``max_bytes``; ``b""`` once it has closed,
        or a close has begun), or else what to await until it sends more:
        :data:`WOKEN` while a runner steps the session, a future in a task (the TLS
        layer's read, a coroutine, once there is one). The wait's result is the
        bytes, or ``None``: call again (always so for :data:`WOKEN`).

        A session reads its client through this (:attr:`Link.receive_or_wait
        <smtpcore._driver._transport.Link.receive_or_wait>`): no coroutine of the
        transport's stays suspended while it waits (about 250 bytes an idle
        session), and a read that waits costs the two calls a coroutine's call and
        its resumption did. A wait given up (a deadline, a cancellation) has no
        ``finally`` here to run: the next call starts afresh, and the selector's
        next call finds nobody waiting and stops watching the socket
        (:meth:`_run`).
        """
        inner = self._inner
        if inner is not None:
            return inner.receive_some(max_bytes)
        if self._eof:  # the end, or a close begun: a close's wait for room stays its own
            return b""
        # Whatever wait came before is over (or was given up).
        self._want = _NOTHING
        self._waiter = None
        if self._more:
            try:
                data = _read(self._fd, max_bytes)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._lose()
                return b""
            else:
                if not data:  # the client closed its side; replies may still go out
                    self._eof = True
                    if self._reading:
                        self._unwatch_reads()
                    return data
                self._more = len(data) == max_bytes
                return data
            self._more = False
        # The wait: the selector's callback sets _more again and wakes the session (or
        # reads, for its task).
        if not self._reading:
            self._watch_reads()
        self._want = max_bytes
        runner = self._runner
        if runner is not None and runner.task is None:
            return WOKEN
        # The loop named: without it, the future asks for the running loop, which
        # checks the process's id with a getpid system call every time (CPython's
        # _asyncio): 290 ns a future against 195 here, though fewer instructions
        # in user space, where valgrind counts.
        waiter = self._waiter = _Future(loop=self._loop)
        return waiter

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """What the kernel holds already, without waiting: ``None`` when nothing has
        come, ``b""`` once the peer has closed."""
        inner = self._inner
        if inner is not None:
            return inner.receive_nowait(max_bytes)
        if self._eof:
            return b""
        try:
            data = _read(self._fd, max_bytes)
        except (BlockingIOError, InterruptedError):
            self._more = False
            return None
        except OSError:
            self._lose()
            return b""
        if not data:
            self._eof = True
        self._more = len(data) == max_bytes
        return data

    def drained(self) -> bool:
        """Whether the last read took everything that had arrived by then."""
        inner = self._inner
        if inner is not None:
            return inner.drained()
        return not self._more and not self._eof

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        """Start TLS on the socket (a :class:`~smtpcore._asyncio_tls.TLSLayer`), which
        serves the rest of the connection.

        Nothing the client sent is buffered here (every read goes to the session),
        so plaintext sent behind STARTTLS is still in the kernel, and the TLS
        layer refuses it (RFC 3207 §4.2). The socket passes to a transport of
        this class beneath the TLS layer, which reads and writes the ciphertext
        as this one did the plaintext; this one hands its calls on to the layer."""
        inner = self._inner
        if inner is not None:
            await inner.start_tls(
                context, server_side=server_side, server_hostname=server_hostname
            )
            return
        if self._lost or self._closing:
            raise ConnectionResetError("the connection is closed")
        if self._held is not None:
            self._write_held()
            if self._lost:
                raise ConnectionResetError("the connection was lost while writing")
        if self._out is not None:  # the reply that says go ahead goes out first
            await self._sent()
            if self._lost:
                raise ConnectionResetError("the connection was lost while writing")
        self._unwatch()
        self._closing = True  # this object no longer reads or writes the socket
        beneath = RawSocketTransport(
            self._sock, self.peer_address, self._loop, self._runner, self._local, self._writes
        )
        self._fd = -1  # the transport beneath's now
        inner = self._inner = TLSLayer(
            beneath, context, server_side=server_side, server_hostname=server_hostname
        )
        await inner.handshake()

    @property
    def local_address(self) -> tuple[str, int] | None:
        if self._local is not None:
            return self._local
        try:
            value = self._sock.getsockname()
        except OSError:
            return None
        if type(value) is tuple and len(value) == 2:  # as peer_address
            return value
        return address(value)

    @property
    def tls(self) -> TLSInfo | None:
        inner = self._inner
        return None if inner is None else inner.tls

    @property
    def finish_handshake(self) -> Callable[[], Awaitable[None]] | None:
        """None: an accepted socket starts in plaintext (``tls_on_connect`` makes its
        handshake with :meth:`start_tls`), so it has none to finish. The link's own
        would ask ``transport``, which is this."""
        return None

    def channel_binding(self, kind: str) -> bytes | None:
        """None: the TLS layer's :class:`ssl.SSLObject` cannot export keying material
        (see :mod:`smtpcore.transport`). The link's own would ask ``transport``,
        which is this."""
        return None

    @property
    def socket(self) -> socket.SocketType:
        """The connection's socket (for its options; reading or writing it directly
        would take bytes from under the session)."""
        return self._sock


if not TYPE_CHECKING:
    # As the selector's key (see the class), its fileobj and fd are its descriptor's slot.
    RawSocketTransport.fileobj = RawSocketTransport.fd = RawSocketTransport._fd
