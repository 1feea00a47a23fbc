"""The asyncio server's raw-socket transport as the loop's selector sees it.

:class:`~smtpcore._asyncio_raw.RawSocketTransport` is built in layers, one
concern each; this is the lowest. It declares, once, the fields every layer
reads and writes (the slots that hold them are the transport's, so that a
connection stays as small as it was), and holds what the selector event loop
calls and reads: the transport as its own reader handle and, on a selector
over a poll object, its own key (see the transport's docstring), the watching
of the socket for reads and for room to write, and the wake-ups of a waiting
session those callbacks make, or a lost connection. Apart because this is the
code that leans on the selector loop's private fields (``_selector``,
``_fd_to_key``, a handle's ``_run``), which a new Python may change: what to
check is here, and only here. The names the other layers share (a read and a
write on the descriptor, what a session waits for) are defined here too, as
aliases each reader imports (``os.read`` and the rest, looked up once rather than
at each read, on the hot path): patch them where they are read.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
from collections.abc import Callable
from selectors import EVENT_READ, EVENT_WRITE, SelectorKey
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    from smtpcore._asyncio_raw_held import HeldWrites
    from smtpcore._asyncio_runner import SessionRunner
    from smtpcore._asyncio_tls import TLSLayer

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
_READ_AND_WRITE: Final = EVENT_READ | EVENT_WRITE
_POLL_LIKE: Final = frozenset(
    getattr(selectors, name)
    for name in ("EpollSelector", "PollSelector", "DevpollSelector")
    if hasattr(selectors, name)
)
"""The standard library's selectors over a poll object (``epoll``, ``poll``, ``devpoll``):
their ``register`` is the key in ``_fd_to_key`` and the descriptor in the poll object
``_selector`` for ``_EVENT_READ``, their ``unregister`` the reverse, the same from
Python 3.10 to 3.13 (see :meth:`SelectorWatch._watch_reads`). Told by their
very type: ``isinstance`` of a selector class costs a Python call (``ABCMeta``)."""
_T = TypeVar("_T")


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
    :meth:`SelectorWatch._run` does the same, written out.
    """
    callbacks = future._callbacks
    if callbacks:
        step, context = callbacks[0]
        future.remove_done_callback(step)
        future.set_result(result)
        context.run(step, future)
    else:
        future.set_result(result)


class SelectorWatch:
    """The transport's fields, and the transport in the loop's selector: watched for
    reads while its session waits for its client, for room while a write waits.

    The fields are declared here for the type checker, and held in
    :class:`~smtpcore._asyncio_raw.RawSocketTransport`'s slots: each layer
    declares no slot, so that it adds nothing to a connection."""

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
    FIELDS: Final = __slots__
    """The slots of :class:`~smtpcore._asyncio_raw.RawSocketTransport`, which holds the
    fields below. To the type checker they are this class's own, so that it checks
    every layer's assignments against them; at run time this class has none, since
    the transport's other base (``LinkBase``) has a slot, and two bases with slots
    cannot be joined."""
    if not TYPE_CHECKING:
        __slots__ = ()

    # The connection, as RawSocketTransport.__init__ sets it up (see the fields there).
    _sock: socket.SocketType
    _fd: int
    peer_address: tuple[str, int] | None
    _local: tuple[str, int] | None
    _loop: asyncio.AbstractEventLoop
    _runner: SessionRunner | None
    _reading: bool
    _writing: bool
    _want: int
    _waiter: asyncio.Future[bytes | None] | None
    _more: bool
    _out: bytearray | None
    _writes: HeldWrites | None
    _held: bytes | None
    _eof: bool
    _lost: bool
    _closing: bool
    _inner: TLSLayer | None
    data: tuple[Any, None] | None

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

    def _watch_for_room(self) -> None:
        """Have the loop's selector run :meth:`_writable` when the kernel takes more."""
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._writable)
