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
"""

from __future__ import annotations

import asyncio
import collections
import errno
import ipaddress
import logging
import os
import selectors
import socket
import ssl
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from selectors import EVENT_READ, EVENT_WRITE, SelectorKey
from sys import intern
from types import CoroutineType
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

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

logger = logging.getLogger("smtpcore.server")

enabled = True
"""Whether servers on a selector event loop serve their connections over the raw
socket (the tests turn it off to run the fallback, asyncio's transports, on Linux)."""

_CLOSE_TIMEOUT: Final = 5.0
"""How long a close waits for the kernel to take what is left to send."""
_ACCEPT_BATCH: Final = 100
"""At most this many connections are accepted a wake (asyncio's own default)."""
_FULL_WAKES: Final = 4
"""Wakes in a row that find every connection they try waiting before the next one tries
twice as many (see :meth:`Acceptor._accept`)."""
_HOLD_AT_MOST: Final = 16384
"""At most this many bytes of a connection wait for the loop's next pass (see
:class:`HeldWrites`): a write that would hold more (a POP3 message's content,
say) goes at once, after what waits, and meets the kernel's back-pressure as
any write does. Replies are smaller by far."""
_ACCEPT_RETRY: Final = 1.0
"""How long a listener out of descriptors (or memory) waits before accepting again."""
_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_NOTHING: Final = 0
_ROOM: Final = -1
"""What a session waits for on its transport (see ``RawSocketTransport._want``), but
for its client's bytes: how many it reads at most, a positive number."""
_Future: Final = asyncio.Future
"""What a session's task awaits while it waits (the loop's ``create_future`` makes
one, but through a Python call: the selector loop's is asyncio's own)."""
_read: Final = os.read
_write: Final = os.write
"""A connection's reads and writes, on its descriptor: ``read`` and ``write`` are
``recv`` and ``send`` without flags, and ``os``'s functions parse their arguments
for less than a socket's methods do (``serves_raw``: POSIX only). Once the socket
is closed the transport's descriptor is -1, never a number the kernel may give
another connection."""
_bare_socket: Final = socket.SocketType
"""The socket type without socket.socket's Python layer (made and closed in C)."""
_READ_AND_WRITE: Final = EVENT_READ | EVENT_WRITE
_POLL_LIKE: Final = frozenset(
    getattr(selectors, name)
    for name in ("EpollSelector", "PollSelector", "DevpollSelector")
    if hasattr(selectors, name)
)
"""The standard library's selectors over a poll object (``epoll``, ``poll``, ``devpoll``):
their ``register`` is the key in ``_fd_to_key`` and the descriptor in the poll object
``_selector`` for ``_EVENT_READ``, their ``unregister`` the reverse, the same from
Python 3.10 to 3.13 (see :meth:`RawSocketTransport._watch_reads`). Told by their
very type: ``isinstance`` of a selector class costs a Python call (``ABCMeta``)."""
_TCP: Final = frozenset({socket.AF_INET, getattr(socket, "AF_INET6", socket.AF_INET)})
_T = TypeVar("_T")


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


class HeldWrites:
    """A server's replies written while other callbacks wait to run in the same pass of
    the event loop: held, and written together at the start of the loop's next pass.

    A reply wakes its client, and the kernel makes the wake-up within the write.
    A client that has nothing else to do sleeps on another CPU, and waking it
    there (an interrupt to that CPU, dearer still on a virtual machine) costs
    the writer more than the write itself. A client that serves many
    connections at once (a relay, Postfix's ``smtp-source``) sleeps again
    between a server's replies, which are tens of microseconds of Python
    apart, and every reply paid the wake-up. Held for the next pass, the
    replies of the connections that were ready together leave one after
    another, and the client, woken by the first, is still awake for the rest.
    (Redis, too, writes its replies together, just before its next wait.)

    Only while something else waits to run in this pass (the loop's queue of
    ready callbacks, ``_ready``, is not empty: see :meth:`for_loop`): a
    session whose client is the only one that sent something writes at once,
    and its reply costs no pass of the loop. And only up to
    :data:`_HOLD_AT_MOST` bytes a connection: a larger write goes at once. A
    held reply is written before anything else of its connection's: its next
    write (:meth:`RawSocketTransport.send_all`), its close, its TLS handshake.

    Measured with ``smtp-source -s 20`` (a new connection a message, 1 KB), the
    server's time in the kernel fell from 73 to 82 µs a message to 40 to 43, and
    its CPU time by a quarter.
    """

    __slots__ = ("_held", "_loop")

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> HeldWrites | None:
        """The loop's held writes, or None where its queue of ready callbacks is not the
        selector loop's ``_ready`` (a Python that changed it): every write at once."""
        if isinstance(getattr(loop, "_ready", None), collections.deque):
            return cls(loop)
        return None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._held: list[RawSocketTransport] = []
        """The transports whose ``_held`` bytes wait for the next pass."""

    def hold(self, transport: RawSocketTransport, data: bytes) -> int:
        """Hold ``data`` to be written after what ``transport`` holds already; how much
        was taken (all of it, as a write that the kernel took whole)."""
        held = transport._held
        if held is None:
            transport._held = data
            if not self._held:
                self._loop.call_soon(self._write_all)
            self._held.append(transport)
        else:
            transport._held = held + data
        return len(data)

    def _write_all(self) -> None:
        """The next pass: write what each transport holds, in the order they held it."""
        transports = self._held
        self._held = []
        for transport in transports:
            data = transport._held
            if data is not None:  # else written meanwhile (a later write, the close)
                transport._held = None
                transport._write_now(data)


def resolve_now(future: asyncio.Future[_T], result: _T) -> None:
    """Resolve a pending ``future`` with ``result``, and run the step of the task that
    awaits it at once, in this call, rather than at the loop's next pass.

    From a callback of the loop (a read's), the task's step, in the task's
    context, runs sooner than ``set_result`` would have it (which costs a
    ``call_soon``, a handle, a pass through the queue and, the queue not being
    empty, one more ``epoll_wait`` a read). The task's wake-up is the future's
    first callback (a task joins the future it awaits at once): it is taken
    back from the future before the result is set, and run here. For asyncio's
    own futures, which the task joins in C: a subclass that kept the wake-up
    aside would cost a Python call at every wait, and the task's slow path.
    :meth:`RawSocketTransport._run` does the same, written out.
    """
    callbacks = future._callbacks
    if callbacks:
        step, context = callbacks[0]
        future.remove_done_callback(step)
        future.set_result(result)
        context.run(step, future)
    else:
        future.set_result(result)


if TYPE_CHECKING:
    _OwnLink = Link  # to type checkers, the link it is (see the class)
else:
    _OwnLink = LinkBase


class RawSocketTransport(_OwnLink):
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
    __slots__ = (
        "_closing",
        "_eof",
        "_fd",
        "_held",
        "_inner",
        "_local",
        "_loop",
        "_lost",
        "_more",
        "_out",
        "_reading",
        "_runner",
        "_sock",
        "_waiter",
        "_want",
        "_writes",
        "_writing",
        "data",
        "peer_address",
    )

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
        positive number), :data:`_ROOM` to write, or :data:`_NOTHING`."""
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
        (see :class:`HeldWrites`); None: every write at once."""
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

    # -- the transport as the selector loop's reader handle -------------------------

    _cancelled: Final = False
    """Never cancelled as a handle is: the transport leaves the selector instead, and
    a call of :meth:`_run` already queued then does nothing."""

    # -- the transport as its key in the loop's selector -------------------------

    events: Final = EVENT_READ
    """As the selector's key, it is watched for reads alone (see the class)."""

    def _replace(self, **changes: Any) -> SelectorKey:
        """The selector's ``modify`` of this key: a ``SelectorKey`` with ``changes``."""
        return SelectorKey(self._fd, self._fd, EVENT_READ, self.data)._replace(**changes)

    def _watch_reads(self) -> None:
        """Have the loop's selector run :meth:`_run` when the client has sent something
        (what ``loop._add_reader`` does, with the transport as the handle, and as
        the key on a selector over a poll object)."""
        self._reading = True
        selector = self._loop._selector  # type: ignore[attr-defined]  # see the class
        fd = self._fd
        if self._writing:  # the writer's handle stays beside this one
            writer = selector.get_key(fd).data[1]
            selector.modify(fd, _READ_AND_WRITE, (self, writer))
        elif type(selector) in _POLL_LIKE:
            # What its register does, with the transport as the key (see _POLL_LIKE).
            selector._selector.register(fd, selector._EVENT_READ)
            self.data = (self, None)
            selector._fd_to_key[fd] = self
        else:
            selector.register(fd, EVENT_READ, (self, None))

    def _unwatch_reads(self) -> None:
        """Stop watching for the client's bytes (what ``loop._remove_reader`` does)."""
        self._reading = False
        self.data = None
        selector = self._loop._selector  # type: ignore[attr-defined]  # see the class
        if selector is None:  # the loop is closed, and its selector with it
            return
        fd = self._fd
        if self._writing:
            writer = selector.get_key(fd).data[1]
            selector.modify(fd, EVENT_WRITE, (None, writer))
        elif type(selector) in _POLL_LIKE:
            # What its unregister does (see _POLL_LIKE), whatever the key.
            del selector._fd_to_key[fd]
            try:  # noqa: SIM105 - contextlib.suppress costs three calls a connection
                selector._selector.unregister(fd)
            except OSError:  # as unregister: the descriptor was closed meanwhile
                pass
        else:
            selector.unregister(fd)

    def cancel(self) -> None:
        """What asyncio does to a reader's handle when it drops it from the selector (a
        ``loop.remove_reader`` of this descriptor by other code): it is no longer
        watched."""
        self._reading = False
        self.data = None

    @property
    def _callback(self) -> Callable[[], None]:
        """What the handle runs, for the loop's debug mode's report of a slow callback."""
        return self._run

    def _run(self) -> None:
        """The selector says the client has sent something: wake what waits for it.

        Not when the socket is no longer watched (a callback earlier in the same
        pass of the loop closed the session, or stopped the reads): that is what
        a cancelled handle is, which the loop would skip."""
        if not self._reading:
            return
        try:
            want = self._want
            if want > 0:
                waiter = self._waiter
                if waiter is None:
                    # What _wake does, without the call: every read of a waiting session.
                    runner = self._runner
                    if runner is not None and runner.waiting:
                        self._more = True
                        runner.wake()
                        return
                else:
                    # Every read of a session in its task: the task waits on the future
                    # while its wake-up is the future's callback (a future resolved, or
                    # cancelled, has none left).
                    callbacks = waiter._callbacks
                    if callbacks or not waiter.done():
                        # The bytes, read here (what receive_or_wait would read when
                        # called again), are the future's result. The wait is over:
                        # _want and _waiter stay as they are until the next wait starts
                        # afresh (a later callback finds the future done: nobody reads).
                        try:
                            data = _read(self._fd, want)
                        except (BlockingIOError, InterruptedError):
                            return  # nothing after all: the wait goes on
                        except OSError:
                            self._lose()  # which wakes the task
                            return
                        if data:
                            self._more = len(data) == want
                        else:  # the client closed its side; replies may still go out
                            self._eof = True
                            self._unwatch_reads()
                        if callbacks:
                            # What resolve_now does, written out (every read): the
                            # task's wake-up, taken back, runs here, in its context.
                            step, context = callbacks[0]
                            waiter.remove_done_callback(step)
                            waiter.set_result(data)
                            context.run(step, waiter)
                        else:
                            waiter.set_result(data)
                        return
                # A wait given up (cancelled, timed out) before it ended: nobody reads.
                self._want = _NOTHING
            # Nothing reads: leave the bytes in the kernel until something does (a level-
            # triggered selector would call this at every pass while they wait).
            self._unwatch_reads()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # as a handle's run reports a callback's failure
            self._loop.call_exception_handler(
                {"message": "raw socket transport: reading failed", "exception": exc}
            )

    def _writable(self) -> None:
        out = self._out
        if out is not None:
            try:
                sent = _write(self._fd, out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._lose()
                return
            if sent < len(out):
                del out[:sent]
                return
            self._out = None
        self._writing = False
        self._loop.remove_writer(self._fd)
        if self._want == _ROOM:
            self._wake()

    def _wake(self) -> None:
        """Resume the session's wait, whatever it waits for (it checks again)."""
        waiter = self._waiter
        if waiter is None:
            runner = self._runner
            if runner is not None:
                runner.wake()
        elif not waiter.done():
            waiter.set_result(None)

    def _lose(self) -> None:
        """The connection failed (a reset, a broken pipe): stop watching it, drop what
        waits to be sent, and wake the session if it waits."""
        self._lost = self._eof = True
        self._out = self._held = None
        self._unwatch()
        if self._want != _NOTHING:
            self._wake()

    def _unwatch(self) -> None:
        if self._reading:
            self._unwatch_reads()
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

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

    async def all_sent(self) -> None:
        """Wait until the kernel has taken every byte written, or the connection is lost
        (the TLS layer's wait for room, before it reads more)."""
        await self._sent()

    def _watch_for_room(self) -> None:
        """Have the loop's selector run :meth:`_writable` when the kernel takes more."""
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._writable)

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
        # never takes them is cut off after _CLOSE_TIMEOUT.
        if self._reading:
            self._unwatch_reads()
        timer = self._loop.call_later(_CLOSE_TIMEOUT, self._lose)
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


Accepted = Callable[[socket.SocketType, object, "tuple[str, int] | None"], None]
"""What an :class:`Acceptor` hands each connection to: the socket, non-blocking, the
peer's address as ``accept`` gave it, and the local address when every connection
of the listener has the same one (None: ask the socket)."""


class Acceptor:
    """A server's listening sockets, watched by the loop's selector: each time one is
    readable, the connections waiting on it are accepted, at most ``backlog`` of
    them and never more than a hundred (the rest at the loop's next pass, so
    that a storm of connections does not hold up the sessions already served),
    and handed to ``accepted``.

    A wake tries as many connections as the last one found waiting, not until
    ``accept`` fails: the selector watches the listening socket by its level,
    so what is left is accepted at the loop's next pass, and a server whose
    clients come one at a time takes each with one ``accept`` where a failed
    second one cost an exception (its message decoded from the C library's
    locale) and its handling, about a fortieth of a connection's work. A
    wake that finds every connection it tried waiting, a few times in a row,
    makes the next try twice as many (Twisted's listener adapts its count in
    the same way).

    It stands where an ``asyncio.Server`` would for the listener: ``sockets``,
    :meth:`close` and :meth:`wait_closed`.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: list[socket.socket],
        accepted: Accepted,
        backlog: int,
    ) -> None:
        self._loop = loop
        self.sockets = sockets
        self._accepted = accepted
        self._batch = max(1, min(backlog, _ACCEPT_BATCH))
        self._tries = 1
        """How many connections the next wake tries to accept (at most ``_batch``)."""
        self._full = 0
        """Wakes in a row that accepted every connection they tried."""
        self._retries: dict[int, asyncio.TimerHandle] = {}
        """Listening sockets resting after running out of descriptors, by descriptor."""
        for sock in sockets:
            sock.listen(backlog)  # as asyncio does, for a socket given bound but not listening
            sock.setblocking(False)
            self._watch(sock)

    def _watch(self, sock: socket.socket) -> None:
        self._retries.pop(sock.fileno(), None)
        kind = (int(sock.family), int(sock.type), sock.proto, sock.family in _TCP)
        self._loop.add_reader(sock.fileno(), self._accept, sock, *kind, _local_of(sock))

    def _accept(
        self,
        listening: socket.socket,
        family: int,
        kind: int,
        proto: int,
        tcp: bool,
        local: tuple[str, int] | None,
    ) -> None:
        # The descriptor, and a bare socket made from it with the listener's family and
        # type as integers: socket.accept() converts both to enums and wraps the socket
        # in Python (eight calls a connection, three more to close it, and 40 bytes).
        accept = listening._accept  # type: ignore[attr-defined]  # _socket.socket's own
        tries = self._tries
        for taken in range(tries):
            try:
                fd, peer = accept()
            except (BlockingIOError, InterruptedError):
                # Fewer were waiting than tried: the next wake tries as many as came.
                self._tries = taken or 1
                self._full = 0
                return
            except ConnectionAbortedError:  # the client gave up while it waited
                continue
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    logger.error(
                        "cannot accept connections (%s); trying again in %s s",
                        exc,
                        _ACCEPT_RETRY,
                    )
                    fileno = listening.fileno()
                    self._loop.remove_reader(fileno)
                    self._retries[fileno] = self._loop.call_later(
                        _ACCEPT_RETRY, self._watch, listening
                    )
                else:
                    logger.exception("accept failed")
                return
            sock = _bare_socket(family, kind, proto, fd)
            try:
                sock.setblocking(False)
                if tcp:  # a reply written in two pieces must not wait for a delayed ACK
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if type(peer) is tuple and len(peer) == 2:
                        # One string for every session from the same IPv4 address.
                        peer = (intern(peer[0]), peer[1])
                self._accepted(sock, peer, local)
            except Exception:
                logger.exception("serving a connection from %s failed", peer)
                sock.close()
        # Every connection tried was waiting: more may be (the selector says so at the
        # loop's next pass); a listener that keeps finding them tries more at once.
        full = self._full + 1
        if full < _FULL_WAKES:
            self._full = full
        else:
            self._full = 0
            self._tries = min(2 * tries, self._batch)

    def close(self) -> None:
        """Stop accepting and close the listening sockets."""
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        for sock in self.sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
                sock.close()

    async def wait_closed(self) -> None:
        """Nothing to wait for: :meth:`close` closes the sockets at once."""


def _local_of(listening: socket.socket) -> tuple[str, int] | None:
    """The local address of every connection accepted on ``listening``, when that is
    its own: bound to one IP address, not to every interface (or a Unix socket)."""
    if listening.family not in _TCP:
        return None
    where = address(listening.getsockname())
    if where is None or ipaddress.ip_address(where[0]).is_unspecified:
        return None
    return where


async def listening_sockets(
    loop: asyncio.AbstractEventLoop, host: str | None, port: int, backlog: int
) -> list[socket.socket]:
    """Sockets listening on ``host`` and ``port``, as ``loop.create_server`` makes them:
    one per address the name resolves to (all interfaces for ``None``), with
    ``SO_REUSEADDR``, and IPv6 sockets for IPv6 only."""
    infos = await loop.getaddrinfo(
        None if host == "" else host,
        port,
        type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE,
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, where in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # a family this host cannot make sockets of
                continue
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == getattr(socket, "AF_INET6", None) and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(where)
            except OSError as exc:
                reason = (exc.strerror or str(exc)).lower()  # worded as asyncio words it
                raise OSError(
                    exc.errno, f"error while attempting to bind on address {where!r}: {reason}"
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(f"no address to listen on for {host!r}")
    return sockets
