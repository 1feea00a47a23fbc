"""The shared client driver run without an event loop, for :mod:`smtpcore.sync`.

The driver's sessions are coroutines, written against a
:class:`~smtpcore.transport.Transport` and a clock. Over a blocking socket
no coroutine ever has to wait on a loop: every read and write blocks the
thread instead, under a socket timeout the clock sets. Such a coroutine
runs to its end on its first step, so :func:`run` drives it with one
``send(None)``, and the blocking clients share every line of protocol
code with the asyncio and trio ones.
"""

from __future__ import annotations

import contextlib
import functools
import math
import select
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Final, TypeVar

from smtpcore._driver._transport import BoundLink, FastPaths, Link, address, readable_probe
from smtpcore.handler import TLSInfo
from smtpcore.transport import tls_info

__all__ = ["SocketClock", "SocketTransport", "open_link", "run"]

T = TypeVar("T")

_POLL = hasattr(select, "poll") and hasattr(socket, "MSG_DONTWAIT")
"""Without ``poll`` (Windows), plain sockets also run in timeout mode."""
_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)
_LONGEST_POLL: Final = (2**31 - 1) / 1000
"""The longest one wait may take, in seconds (about 24.8 days): ``poll`` takes its
timeout as a C ``int`` of milliseconds, and so does the wait under a socket timeout.
A deadline further off is still a deadline: it is waited out in turns this long."""


def _poll_timeout(seconds: float | None) -> float | None:
    """``seconds`` as one ``poll``'s timeout in milliseconds (``None``: no limit), no
    more than it takes; ``poll`` rounds a fraction of a millisecond up."""
    return None if seconds is None else min(seconds, _LONGEST_POLL) * 1000


def _socket_timeout(seconds: float | None) -> float | None:
    """``seconds`` as a socket timeout: beyond the longest wait, none. A shorter one
    would end the wait before its deadline; with none, a wait whose deadline is
    more than 24.8 days off may outlast it, and a connect ends at the kernel's own
    connect timeout (about two minutes on Linux) as it would anyway."""
    return None if seconds is None or seconds > _LONGEST_POLL else seconds


def run(call: Coroutine[Any, Any, T]) -> T:
    """The result of ``call``, a coroutine whose every wait blocks the thread."""
    try:
        call.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    call.close()
    raise RuntimeError("a blocking session tried to wait on an event loop")


class _Deadline:
    """One ``async with clock.deadline(seconds)`` block: the socket's waits inside it
    end by ``TimeoutError`` once it is due."""

    __slots__ = ("_clock", "due")

    def __init__(self, clock: SocketClock, seconds: float | None) -> None:
        self._clock = clock
        self.due = math.inf if seconds is None else time.monotonic() + seconds

    def expire(self) -> None:
        self.due = -math.inf

    async def __aenter__(self) -> _Deadline:
        self._clock._deadlines.append(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._clock._deadlines.remove(self)


class _Watchdog:
    """The session watchdog of the driver's clock contract, on the same socket timeouts."""

    __slots__ = ("_clock", "_min_rate", "_seconds", "_started", "due", "expired")

    def __init__(self, clock: SocketClock) -> None:
        self._clock = clock
        self._seconds: float | None = None
        self._min_rate: float | None = None
        self._started = 0.0
        self.due = math.inf
        self.expired = False

    def arm(self, seconds: float | None, min_rate: float | None = None) -> None:
        self._seconds, self._min_rate = seconds, min_rate
        self._started = time.monotonic()
        self.due = math.inf if seconds is None else self._started + seconds

    def resume(self, received: int = 0) -> None:
        if self._seconds is None:
            return
        if self._min_rate and received:
            now = time.monotonic()
            self.due = min(self.due + received / self._min_rate, now + self._seconds)

    def disarm(self) -> None:
        self.due = math.inf

    def expire(self) -> None:
        self.due = -math.inf

    async def __aenter__(self) -> _Watchdog:
        self._clock._watchdog = self
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._clock._watchdog = None
        if isinstance(exc, TimeoutError):
            self.expired = True


class SocketClock:
    """The driver's clock for a blocking socket: deadlines become the socket's waits."""

    def __init__(self) -> None:
        self._deadlines: list[_Deadline] = []
        self._watchdog: _Watchdog | None = None
        self._read_due = math.inf
        """When the read under way through :meth:`receive_within` is due."""

    def deadline(self, seconds: float | None) -> _Deadline:
        return _Deadline(self, seconds)

    def watchdog(self) -> _Watchdog:
        return _Watchdog(self)

    async def within(self, seconds: float | None, call: Awaitable[T]) -> T:
        async with self.deadline(seconds):
            return await call

    def start_within(self, seconds: float | None, call: Awaitable[T]) -> Awaitable[T]:
        return self.within(seconds, call)

    def timed_reader(
        self, receive: Callable[[int], Awaitable[bytes]]
    ) -> Callable[[float | None, int], Awaitable[bytes]]:
        """``receive_within(seconds, max_bytes)`` for the link (a client's read of
        each reply, the hot path): ``receive`` without a deadline object, and on a
        :class:`SocketTransport` its own :meth:`SocketTransport.receive_within`."""
        transport = getattr(receive, "__self__", None)
        if isinstance(transport, SocketTransport) and transport._clock is self:
            return transport.receive_within
        return functools.partial(self.receive_within, receive)

    async def receive_within(
        self, receive: Callable[[int], Awaitable[bytes]], seconds: float | None, max_bytes: int
    ) -> bytes:
        """``await receive(max_bytes)`` under a deadline of ``seconds``."""
        if seconds is None:
            return await receive(max_bytes)
        self._read_due = time.monotonic() + seconds
        try:
            return await receive(max_bytes)
        finally:
            self._read_due = math.inf

    def close(self) -> None:
        self._deadlines.clear()

    async def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def run_in_thread(self, call: Callable[[], T]) -> T:
        """``call()`` in this thread: a blocking session holds no event loop."""
        return call()

    def stray_cancellation(self, exc: BaseException) -> bool:
        """Nothing cancels a blocking session's code."""
        return False

    def timeout(self) -> float | None:
        """Seconds the next wait may take (``None``: no limit); ``TimeoutError`` when a
        deadline has passed already."""
        due = self._read_due
        if self._watchdog is not None:
            due = min(due, self._watchdog.due)
        for deadline in self._deadlines:  # a loop: min() would make a generator per wait
            due = min(due, deadline.due)
        if due == math.inf:
            return None
        left = due - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left


class SocketTransport(FastPaths):
    """A :class:`~smtpcore.transport.Transport` on a connected blocking socket.

    A plain TCP socket stays in blocking mode, and each read or write that must
    not wait says so (``MSG_DONTWAIT``): then a read or write that need not wait
    is one system call. A reply's read (:meth:`receive_within`, under one
    deadline) is a ``poll`` and a ``recv``, as any other wait is a ``poll`` under
    the clock's timeout: ``poll`` waits out what is left of its timeout when a
    signal interrupts it, where a blocking ``recv`` under the kernel's
    ``SO_RCVTIMEO`` would start it again, and a signal more frequent than the
    timeout (a profiler's) would make the wait endless. A TLS socket (after STARTTLS, or on
    connect) runs in the standard library's timeout mode, which knows about the
    records it holds decrypted.
    """

    def __init__(self, sock: socket.socket, clock: SocketClock) -> None:
        self._sock = sock
        self._clock = clock
        self._readable: select.poll | None = None
        """Polls the plain socket for reading (None under TLS, or without ``poll``)."""
        self._writable: select.poll | None = None
        self._tls_readable: Callable[[], object] | None = None
        """Asks the kernel whether the TLS socket is readable (:meth:`settled`), made
        at its first ask: one system call and no Python call a look."""
        self._drained = False
        if _POLL and not isinstance(sock, ssl.SSLSocket):
            sock.setblocking(True)
            self._readable = select.poll()
            self._readable.register(sock, select.POLLIN)

    def _wait(self, poller: select.poll) -> None:
        """Wait until ``poller`` finds the plain socket ready, or ``TimeoutError`` once
        the clock's deadline is due. Bounded: each turn waits what is left of a finite
        deadline, at most :data:`_LONGEST_POLL`, and the clock raises once it is due."""
        while not poller.poll(_poll_timeout(self._clock.timeout())):
            pass

    async def receive_some(self, max_bytes: int) -> bytes:
        sock = self._sock
        readable = self._readable
        if readable is None:
            sock.settimeout(_socket_timeout(self._clock.timeout()))
            self._drained = False
            return sock.recv(max_bytes)
        while True:
            try:
                data = sock.recv(max_bytes, _DONTWAIT)
            except BlockingIOError:
                self._wait(readable)
            else:
                self._drained = len(data) < max_bytes
                return data

    async def receive_within(self, seconds: float | None, max_bytes: int) -> bytes:
        """A reply's read under a deadline of ``seconds`` (the link's ``receive_within``),
        in one call: the reply is due, and most often not there yet, so the plain
        socket waits for it at once, as a socket timeout would, without the failed
        read and the ``BlockingIOError`` that trying first would cost. A deadline
        further off than one ``poll`` takes makes it refuse the wait
        (``OverflowError``): then, as after a wake for nothing, the rest is waited
        out in turns of at most :data:`_LONGEST_POLL`, bounded by the finite
        deadline, so the first wait costs nothing more."""
        clock = self._clock
        readable = self._readable
        if readable is None or clock._deadlines or clock._watchdog is not None:
            return await clock.receive_within(self.receive_some, seconds, max_bytes)
        sock = self._sock
        due = math.inf if seconds is None else time.monotonic() + seconds
        wait = None if seconds is None else seconds * 1000  # poll rounds it up
        while True:
            try:
                if readable.poll(wait):
                    data = sock.recv(max_bytes, _DONTWAIT)
                    self._drained = len(data) < max_bytes
                    return data
            except (BlockingIOError, OverflowError):  # woken for nothing; too long a wait
                pass
            left = due - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            wait = None if due == math.inf else _poll_timeout(left)

    def drained(self) -> bool:
        """Whether the last read took everything that had arrived by then: a plain
        socket's read that gave fewer octets than asked for."""
        return self._drained

    def settled(self) -> bool:
        """Whether nothing has arrived that no read has taken: the socket has nothing
        to read (nor, under TLS, a record decrypted and kept). Asked before a
        message's first command, after a wait between calls that the last read's
        :meth:`drained` knows nothing of."""
        readable = self._readable
        if readable is not None:
            return not readable.poll(0)
        sock = self._sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False
        probe = self._tls_readable
        if probe is None:
            probe = self._tls_readable = readable_probe(sock.fileno())
        return not probe()

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """What has already arrived (``b""`` once the peer closed), or ``None``."""
        sock = self._sock
        readable = self._readable
        flags = _DONTWAIT
        if readable is None:
            sock.setblocking(False)
            flags = 0  # TLS takes none
        elif not readable.poll(0):  # asked before a command, and nothing there: no exception
            return None
        self._drained = False
        try:
            return sock.recv(max_bytes, flags)
        except (BlockingIOError, ssl.SSLWantReadError):
            return None
        except OSError:  # reset: the next wait says so
            return None

    def send_nowait(self, data: bytes) -> int:
        """Write what the kernel takes at once (plain TCP only; else ``0``, and the
        driver waits for the rest with :meth:`send_all`)."""
        sock = self._sock
        flags = _DONTWAIT
        if self._readable is None:  # TLS, or a system without poll
            if isinstance(sock, ssl.SSLSocket):
                return 0  # a TLS record half written must be retried as it was
            sock.setblocking(False)
            flags = 0
        try:
            return sock.send(data, flags)
        except BlockingIOError:
            return 0

    async def send_all(self, data: bytes) -> None:
        sock = self._sock
        if self._readable is None:
            sock.settimeout(_socket_timeout(self._clock.timeout()))
            sock.sendall(data)
            return
        writable = self._writable
        if writable is None:
            writable = self._writable = select.poll()
            writable.register(sock, select.POLLOUT)
        view = memoryview(data)
        while view:
            try:
                view = view[sock.send(view, _DONTWAIT) :]
            except BlockingIOError:
                self._wait(writable)

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        # Nothing is buffered here: bytes still in the kernel go to the handshake,
        # which fails on them rather than read them as protected (RFC 3207 §6).
        self._sock.settimeout(_socket_timeout(self._clock.timeout()))
        self._readable = self._writable = None
        self._drained = False
        self._sock = context.wrap_socket(
            self._sock, server_side=server_side, server_hostname=server_hostname
        )

    async def aclose(self) -> None:
        self._tls_readable = None  # its descriptor's number may name another socket
        self._sock.close()

    @property
    def peer_address(self) -> tuple[str, int] | None:
        try:
            return address(self._sock.getpeername())
        except OSError:
            return None

    @property
    def local_address(self) -> tuple[str, int] | None:
        try:
            return address(self._sock.getsockname())
        except OSError:
            return None

    @property
    def tls(self) -> TLSInfo | None:
        return tls_info(self._sock) if isinstance(self._sock, ssl.SSLSocket) else None


def open_link(host: str, port: int, timeout: float | None, unix_path: str | None = None) -> Link:
    """A TCP connection to ``host:port``, or one to the Unix socket ``unix_path``
    (``TimeoutError`` after ``timeout``; see :func:`_socket_timeout` for one further
    off than a socket timeout takes)."""
    if unix_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(_socket_timeout(timeout))
            sock.connect(unix_path)
        except BaseException:
            sock.close()
            raise
    else:
        sock = socket.create_connection((host, port), timeout=_socket_timeout(timeout))
        with contextlib.suppress(OSError):  # not every socket family has it
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    clock = SocketClock()
    return BoundLink(SocketTransport(sock, clock), clock)
