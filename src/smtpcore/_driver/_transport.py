"""What the shared driver runs a session over: a transport and the framework's clock.

A :class:`~smtpcore.transport.Transport` is a byte stream and nothing more;
timing belongs to the framework adapter that runs the session, which supplies
a :class:`~smtpcore._driver._timeouts.Clock`. A :class:`Link` joins the two
for one connection, so the sessions and clients have one object to talk to.
"""

from __future__ import annotations

import functools
import select
import ssl
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, TypeVar

from smtpcore._driver._timeouts import Clock, Deadline, Watchdog, Within
from smtpcore.handler import TLSInfo
from smtpcore.sasl import TLS_EXPORTER
from smtpcore.transport import Transport, tls_info

_T = TypeVar("_T")

__all__ = [
    "CLOSE_TIMEOUT",
    "BoundLink",
    "FastPaths",
    "Link",
    "LinkBase",
    "Transport",
    "address",
    "readable_now",
    "readable_probe",
    "tls_info",
]


CLOSE_TIMEOUT: Final = 5.0
"""How long a transport's close may take (the last bytes sent, a held reply written,
TLS's close_notify answered) before the connection is cut off. One bound for every
transport of the library's, which each reads here at its close: a test patches it
here, and a copy in a transport's module would miss the patch."""


def readable_now(fileno: int) -> bool:
    """Whether the socket ``fileno`` has something to read (bytes, or its end), asked
    without waiting. ``poll`` where there is one: ``select`` refuses a descriptor
    past ``FD_SETSIZE``, which a relay with many connections reaches."""
    if _POLL:
        poller = select.poll()
        poller.register(fileno, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fileno], [], [], 0)[0])


_POLL: Final = hasattr(select, "poll")


def readable_probe(fileno: int) -> Callable[[], object]:
    """:func:`readable_now` for a socket asked often (a client's link, before each
    message): its poll object made once and kept, so that each ask is one system
    call and no Python call (a ``functools.partial`` of its ``poll``, true where
    the socket is readable). Where there is no ``poll``, :func:`readable_now`.
    The caller asks only while the socket is open: a closed descriptor's number
    may name another socket later."""
    if _POLL:
        poller = select.poll()
        poller.register(fileno, select.POLLIN)
        return functools.partial(poller.poll, 0)
    return functools.partial(readable_now, fileno)


def _optional_count(transport: Transport, name: str) -> object:
    """What the transport's optional method ``name`` answers, None without one or when
    it raises (a transport's own fault: it cannot say); the caller checks the kind."""
    method = getattr(transport, name, None)
    if method is None:
        return None
    try:
        return method()
    except Exception:
        return None


def _cannot_send_now(data: bytes) -> int:
    return 0


def _cannot_receive_now(max_bytes: int) -> bytes | None:
    return None


def _not_drained() -> bool:
    return False


def _nothing_arrived() -> bool:
    return False


def _not_settled() -> bool:
    return False


def _no_channel_binding(kind: str) -> bytes | None:
    return None


class FastPaths:
    """Marks a transport of the library's own whose fast paths a :class:`Link` binds:
    ``send_nowait``, ``receive_nowait``, ``drained``, ``settled``, ``arrived``,
    ``arrived_in_memory``, ``receive_to_drop`` and, where it has one,
    ``receive_or_wait``, each meaning what :class:`LinkBase` says (``send_nowait``
    gives a count; ``receive_nowait`` gives ``None`` for nothing yet and ``b""``
    only for the peer's close).

    Those names are not in the :class:`~smtpcore.transport.Transport` protocol, so
    another transport's methods of the same names mean whatever their writer meant
    (a ``send_nowait`` that returns None, a ``receive_nowait`` that gives ``b""``
    for nothing buffered): taken for the fast paths, they would send bytes twice
    or read an end that never came. Every transport without this mark gets the
    stand-ins, which never take the fast path. A transport that derives from one
    of the library's keeps the mark and its meaning."""

    __slots__ = ()


_FROM_TRANSPORT: Final[dict[str, Callable[..., Any] | str | None]] = {
    "receive_some": None,
    "receive_nowait": _cannot_receive_now,
    "arrived": _nothing_arrived,
    "arrived_in_memory": _nothing_arrived,
    "drained": _not_drained,
    "settled": _not_settled,
    "send_all": None,
    "send_nowait": _cannot_send_now,
    "receive_to_drop": "receive_some",
}
"""The link's methods that are the transport's, with what stands in for a fast path
(None: a method of the Transport protocol, which every transport has; a name: the
transport's method of that name). A fast path is the transport's only where it is
one of :class:`FastPaths`."""


def _from_transport(transport: Transport, name: str) -> Callable[..., Any]:
    """The transport's method ``name`` for the link, or its stand-in (see
    :data:`_FROM_TRANSPORT` and :class:`FastPaths`)."""
    stand_in = _FROM_TRANSPORT[name]
    if stand_in is None:
        method: Callable[..., Any] = getattr(transport, name)
        return method
    if isinstance(stand_in, str):
        stand_in = getattr(transport, stand_in)
    if isinstance(transport, FastPaths):
        return getattr(transport, name, stand_in)
    return stand_in


def _own_receive_or_wait(transport: Transport) -> Callable[..., Any] | None:
    """The transport's own ``receive_or_wait`` where it is one of :class:`FastPaths`
    and has one (trio's, which spares a waiting session the coroutine of its
    ``receive_some``); else None, and the link's is ``receive_some``. None too where
    a subclass overrides ``receive_some`` below the class that gives
    ``receive_or_wait`` (a wire recorder, say): that method reads past the override,
    which must see every read."""
    if not isinstance(transport, FastPaths):
        return None
    kind = type(transport)
    for owner in kind.__mro__:
        if "receive_or_wait" in vars(owner):
            if vars(owner).get("receive_some") is not getattr(kind, "receive_some", None):
                return None
            # Not in the Transport protocol: read by name.
            method: Callable[..., Any] = getattr(transport, "receive_or_wait")  # noqa: B009
            return method
    return None


_FROM_CLOCK: Final = frozenset({"deadline", "within"})


async def _receive_under_deadline(
    deadline: Callable[[float | None], AbstractAsyncContextManager[Deadline]],
    receive: Callable[[int], Awaitable[bytes]],
    seconds: float | None,
    max_bytes: int,
) -> bytes:
    async with deadline(seconds):
        return await receive(max_bytes)


class LinkBase:
    """One connection as a session sees it: a transport's bytes and a clock's time.

    The methods used on the hot path (reads, writes, deadlines) are kept as the
    transport's and the clock's bound methods in slots, so a read through the
    link costs what a read on the transport costs: the link adds no call of its
    own there. Each is bound at its first use (:class:`Link`'s ``__getattr__``),
    so that an idle connection holds only those its session has used (a server's
    session never reads without waiting, for one). Those used once a session (TLS,
    the watchdog, the close) go through the link's own methods.

    This class has the methods and no slots: :class:`Link` adds them all, and
    the ``__getattr__`` that binds them. A transport that is its own link (the
    asyncio server's :class:`~smtpcore._asyncio_raw.RawSocketTransport`)
    derives from it, with methods of its own for the clock's: a class with a
    ``__getattr__`` has every attribute read go through that hook first, which
    the interpreter cannot specialize (a transport's own fields are read a dozen
    times a read).
    """

    __slots__ = ()

    transport: Transport
    clock: Clock
    receive_some: Callable[[int], Awaitable[bytes]]
    receive_or_wait: Callable[[int], bytes | Awaitable[bytes | None]]
    """``receive_or_wait(max_bytes)``: how a server's session reads its client. The
    bytes that have arrived (``b""`` once the peer has closed), or else an awaitable
    to await for them, whose result is the bytes, or ``None``: the wait is over,
    call again. The transport's ``receive_some`` (its coroutine is that awaitable)
    unless the link has a better one: the raw socket's hands out a wait with no
    coroutine of its own, so that a session waiting for its client is suspended one
    frame less deep (:class:`~smtpcore._asyncio_raw.RawSocketTransport`); a
    :class:`FastPaths` transport's own ``receive_or_wait``, where it has one (trio's
    hands out its plain-socket read without ``receive_some``'s coroutine around
    it)."""
    receive_nowait: Callable[[int], bytes | None]
    """What has already arrived, without waiting: ``None`` when nothing has (or
    the transport cannot tell: it is no :class:`FastPaths`, or has no such
    method), ``b""`` once the peer has closed. A client reads it before writing a
    command while no reply is due."""
    arrived: Callable[[], bool]
    """Whether bytes have reached the socket that :attr:`receive_nowait` cannot give
    (a TLS record, which a read that never waits cannot decrypt on trio; what an
    event loop kept from running has yet to read): a read now would start on them
    at once. ``False`` when the transport cannot tell (as for
    :attr:`receive_nowait`). A client reads them before the end of content it took
    time to read (RFC 5321 §4.1.1.4)."""
    arrived_in_memory: Callable[[], bool]
    """Whether what :attr:`arrived` found is all in the process already, and nothing
    in the socket (a TLS record trio read with the one before it and has yet to
    decrypt): a read takes it without waiting for the network, so the client's look
    at it is bounded near zero. ``False`` when the transport cannot tell (as for
    :attr:`receive_nowait`): the look then has its whole bound."""
    drained: Callable[[], bool]
    """Whether the last read took everything that had arrived by then (a plain
    socket's read that gave fewer octets than asked for); ``False`` when the
    transport cannot tell (as for :attr:`receive_nowait`). A client that has just
    read a reply and finds it drained need not look for unasked ones before its
    next command."""
    settled: Callable[[], bool]
    """Whether nothing from the peer waits anywhere: none read and not taken, and
    none in the socket (asked of the kernel, without waiting); ``False`` when the
    transport cannot tell (as for :attr:`receive_nowait`). Asked before the first
    command of a message, where the session may have sat idle since the last reply
    and a reply no command asked for may have come meanwhile (a ``421`` at the
    server's idle timeout); in place of :attr:`drained`, so at no call more."""
    receive_to_drop: Callable[[int], Awaitable[bytes]]
    """Read bytes only to drop them, as a server's linger does before its close: the
    transport's ``receive_some``, or its own ``receive_to_drop`` where it is a
    :class:`FastPaths` (trio's reads on under a TLS layer that a write cut off has
    broken)."""
    send_all: Callable[[bytes], Awaitable[None]]
    send_nowait: Callable[[bytes], int]
    """Write what can go out without waiting; how many bytes that was (``0`` when
    the transport has no such fast path: the driver then waits for the rest)."""
    receive_within: Callable[[float | None, int], Awaitable[bytes]]
    """``receive_within(seconds, max_bytes)``: a read under a deadline of ``seconds``
    (``TimeoutError`` after), as a client reads each reply. What the clock's own
    ``timed_reader(receive_some)`` makes where it has one, which costs less than
    a deadline entered and left around each read."""
    deadline: Callable[[float | None], AbstractAsyncContextManager[Deadline]]
    within: Within

    def start_within(
        self, seconds: float | None, call: Awaitable[_T]
    ) -> tuple[_T] | Awaitable[_T]:
        """``within(seconds, call)``, started now where the clock allows it: ``(result,)``
        when ``call`` answers without waiting for anything, else what to await for
        its result. A handler's hook most often answers at once, and its caller is
        then spared the coroutines that await it (see the clock's
        ``start_within``)."""
        return self.clock.start_within(seconds, call)

    def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> Awaitable[None]:
        return self.transport.start_tls(
            context, server_side=server_side, server_hostname=server_hostname
        )

    def channel_binding(self, kind: str) -> bytes | None:
        """The transport's channel binding data of a type (``tls-exporter``), or ``None``
        when it has none (or no such method: the standard library's ``ssl`` cannot
        export keying material)."""
        return getattr(self.transport, "channel_binding", _no_channel_binding)(kind)

    def cancelled_send_may_cut(self) -> bool:
        """Whether a cancelled ``send_all`` may have written only a part of its data: unless
        the transport's optional ``keeps_cancelled_sends`` is ``True`` (asyncio's
        transports keep every byte written), the safe assumption (see
        :mod:`smtpcore.transport`): the peer may hold half a reply."""
        return getattr(self.transport, "keeps_cancelled_sends", False) is not True

    def cancelled_close_closes(self) -> bool:
        """Whether a cancelled ``aclose`` still closes the connection: only where the
        transport's class says ``closes_when_cancelled = True`` (the library's own
        transports do; see :mod:`smtpcore.transport`). A transport of yours
        written to bound its close itself may close in its last step, which a
        cancellation would skip. Read off the class, not the instance: a wrapper
        whose ``__getattr__`` forwards to a library transport would hand on that
        transport's ``True`` for an ``aclose`` of its own, which may await
        something before it closes what it wraps."""
        return getattr(type(self.transport), "closes_when_cancelled", False) is True

    def waiting_to_send(self) -> int:
        """How many bytes the transport took still wait for room the peer makes only by
        reading: its optional ``waiting_to_send()``, a count, or ``True`` for some of
        a count it does not know (1 here: see :mod:`smtpcore.transport`); none
        without one, for anything else it gives, or when it raises. Asked as a session's timeout
        goes off, never on the way of a message."""
        count = _optional_count(self.transport, "waiting_to_send")
        if count is True:
            return 1
        return count if type(count) is int and count > 0 else 0

    def unacknowledged(self) -> int | None:
        """How many bytes sent the peer has not acknowledged yet, as the kernel counts
        them: the transport's optional ``unacknowledged()``, a count (0 or more), or
        None where it cannot say (no such method, anything else it gives, or when it
        raises). The count falls whenever the peer reads, however slowly, where
        :meth:`waiting_to_send` falls only once the socket has room again. Asked
        with it as a session's timeout goes off, never on the way of a message."""
        count = _optional_count(self.transport, "unacknowledged")
        return count if type(count) is int and count >= 0 else None

    async def send_eof(self) -> None:
        """Shut down the sending side once what was written has gone (TCP's FIN), where
        the transport can: its optional ``send_eof``; nothing without one."""
        send_eof = getattr(self.transport, "send_eof", None)
        if send_eof is not None:
            await send_eof()

    def watchdog(self) -> AbstractAsyncContextManager[Watchdog]:
        return self.clock.watchdog()

    def sleep(self, seconds: float) -> Awaitable[None]:
        return self.clock.sleep(seconds)

    def run_in_thread(self, call: Callable[[], _T]) -> Awaitable[_T]:
        return self.clock.run_in_thread(call)

    def stray_cancellation(self, exc: BaseException) -> bool:
        return self.clock.stray_cancellation(exc)

    async def aclose(self) -> None:
        """Close the transport, then the clock (its timers go with the connection)."""
        try:
            await self.transport.aclose()
        finally:
            self.clock.close()

    def channel_bindings(self) -> dict[str, bytes]:
        """What SASL's ``-PLUS`` mechanisms may bind to on this connection, by type.

        Only ``tls-exporter`` (RFC 9266), the binding defined for TLS 1.3;
        empty before a handshake, and over a TLS layer that cannot export.
        Asked again after each handshake: the data belong to one connection.
        """
        data = self.channel_binding(TLS_EXPORTER)
        if not isinstance(data, bytes) or not data:
            return {}
        return {TLS_EXPORTER: data}

    @property
    def peer_address(self) -> tuple[str, int] | None:
        return self.transport.peer_address

    @property
    def local_address(self) -> tuple[str, int] | None:
        return self.transport.local_address

    @property
    def tls(self) -> TLSInfo | None:
        return self.transport.tls

    @property
    def finish_handshake(self) -> Callable[[], Awaitable[None]] | None:
        """The transport's own ``finish_handshake``, for a stream given under TLS
        (:mod:`smtpcore.transport`), or None: asked of the link, as :attr:`tls` is,
        so that a transport that is its own link (without ``transport``) answers
        for itself."""
        return getattr(self.transport, "finish_handshake", None)


class Link(LinkBase):
    """A transport and a clock joined for a session (see :class:`LinkBase`)."""

    __slots__ = (
        "arrived",
        "arrived_in_memory",
        "clock",
        "deadline",
        "drained",
        "receive_nowait",
        "receive_or_wait",
        "receive_some",
        "receive_to_drop",
        "receive_within",
        "send_all",
        "send_nowait",
        "settled",
        "transport",
        "within",
    )

    def __init__(self, transport: Transport, clock: Clock) -> None:
        self.transport = transport
        self.clock = clock

    if not TYPE_CHECKING:  # the slots' own annotations are the types to check

        def __getattr__(self, name: str) -> Any:
            """A hot-path method not used before on this link: bound now, and kept."""
            if name in _FROM_TRANSPORT:
                method = _from_transport(self.transport, name)
            elif name == "receive_or_wait":
                method = _own_receive_or_wait(self.transport)
                if method is None:
                    method = self.receive_some  # one bound method for both slots
            elif name in _FROM_CLOCK:
                method = getattr(self.clock, name)
            elif name == "receive_within":
                clock = self.clock
                receive = self.transport.receive_some
                reader = getattr(clock, "timed_reader", None)
                method = (
                    reader(receive)
                    if reader is not None
                    else functools.partial(_receive_under_deadline, clock.deadline, receive)
                )
            else:
                raise AttributeError(name)
            setattr(self, name, method)
            return method


if TYPE_CHECKING:
    _Bound = Link  # to type checkers, the link it is (see BoundLink)
else:
    _Bound = LinkBase


class BoundLink(_Bound):
    """A :class:`Link` whose hot-path methods are all bound as it is made, for a
    client's connection, which uses them all from its first message.

    A class with ``__getattr__`` (:class:`Link`'s, which binds each method at its
    first use) has every attribute read go through that hook, which the
    interpreter cannot specialize: a client reads ``send_nowait``,
    ``receive_within`` and ``drained`` on its link at every command. This one
    has no such hook; what it binds is what a :class:`Link` of the same
    transport and clock binds (it asks one). A server's links stay lazy: an
    idle session keeps only the methods its session used.
    """

    __slots__ = Link.__slots__

    def __init__(self, transport: Transport, clock: Clock) -> None:
        self.transport = transport
        self.clock = clock
        lazy = Link(transport, clock)
        for name in _BOUND:
            setattr(self, name, getattr(lazy, name))


_BOUND: Final = (*_FROM_TRANSPORT, "receive_or_wait", *sorted(_FROM_CLOCK), "receive_within")
"""What a :class:`BoundLink` binds as it is made: every method a :class:`Link`
binds at its first use."""


def address(value: object) -> tuple[str, int] | None:
    """(host, port) out of a socket address of any family (an IPv4 one as it is)."""
    if (
        type(value) is tuple
        and len(value) == 2
        and type(value[0]) is str
        and type(value[1]) is int
    ):
        return value
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None
