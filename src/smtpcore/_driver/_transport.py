"""The transport interface the shared driver is written against.

A transport is one connected byte stream: read some, write all, upgrade to
TLS in place, close. It also supplies deadlines, since only the framework
that owns the event loop can interrupt a wait. The asyncio and trio
adapters each implement it once; a new framework needs only this.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

from smtpcore._driver._timeouts import Deadline, Watchdog
from smtpcore.handler import TLSInfo

__all__ = ["Transport", "YieldFirst", "address", "tls_info"]

T = TypeVar("T")


class YieldFirst:
    """Whether a read with nothing buffered should let the event loop run once before
    it waits, for a transport whose loop makes that pay.

    A server answering many clients finds, more often than not, that a
    client's next command arrived while the other sessions took their turn.
    On trio a read that checkpoints and then finds it costs far less than a
    wait, which registers with epoll and unregisters after (the trio
    transport hits in over 99% of reads under 20 busy sessions). A
    connection alone with its peer finds nothing that way, so after a miss
    the next few reads wait at once. asyncio gains nothing from it: a task
    that yields runs again before the reads of the loop's next pass are
    delivered, so it would always miss.
    """

    __slots__ = ("_waits_left",)

    WAITS_AFTER_A_MISS = 8

    def __init__(self) -> None:
        self._waits_left = 0

    def now(self) -> bool:
        """True if this read should yield first (and then call :meth:`missed` if
        nothing came meanwhile)."""
        if self._waits_left:
            self._waits_left -= 1
            return False
        return True

    def missed(self) -> None:
        self._waits_left = self.WAITS_AFTER_A_MISS


class Transport(Protocol):
    """One connected byte stream, as the driver needs it.

    Errors of the connection itself (reset, broken pipe, a failed TLS
    handshake) are raised as :class:`OSError` (``ssl.SSLError`` is one).
    """

    async def receive_some(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes, waiting for at least one; ``b""`` once the peer
        closed its side."""
        ...

    async def send_all(self, data: bytes) -> None:
        """Write all of ``data``, waiting while the peer is slow to read."""
        ...

    def send_nowait(self, data: bytes) -> int:
        """Write what can be written without waiting; return how many bytes that was.

        A reply usually goes out whole at once, so the driver tries this first
        and enters a deadline (a cancel scope under trio) only for the rest.
        """
        ...

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        """Run the TLS handshake over this stream (RFC 3207 §4, RFC 8314 §3.3).

        Bytes received before the handshake and not yet read are dropped:
        they came in plaintext and must never be taken as protected.
        """
        ...

    async def aclose(self) -> None:
        """Close the stream; bounded in time, and safe to call twice."""
        ...

    def deadline(self, seconds: float | None) -> AbstractAsyncContextManager[Deadline]:
        """A block that raises ``TimeoutError`` after ``seconds`` (never if ``None``)."""
        ...

    def watchdog(self) -> AbstractAsyncContextManager[Watchdog]:
        """The timer of a session's waits for its client (see :class:`Watchdog`)."""
        ...

    async def within(self, seconds: float | None, call: Awaitable[T]) -> T:
        """Await ``call``, raising ``TimeoutError`` if it takes over ``seconds``.

        ``async with self.deadline(seconds): return await call`` is always
        correct; asyncio's transport enters its deadline only once the call
        waits (:func:`~smtpcore._driver._timeouts.deadline_when_waiting`).
        """
        ...

    @property
    def peer_address(self) -> tuple[str, int] | None:
        """The remote host and port."""
        ...

    @property
    def local_address(self) -> tuple[str, int] | None:
        """The local host and port."""
        ...

    @property
    def tls(self) -> TLSInfo | None:
        """The TLS state once a handshake is done, else ``None``."""
        ...


def tls_info(ssl_object: Any) -> TLSInfo | None:
    """Describe a finished handshake, for :attr:`Transport.tls`.

    ``ssl_object`` is an :class:`ssl.SSLObject`, or anything with its
    ``version()``, ``cipher()`` and ``getpeercert()`` (a ``trio.SSLStream``).
    """
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    try:
        certificate = ssl_object.getpeercert() or None
    except ValueError:  # handshake not done
        certificate = None
    return TLSInfo(
        version=ssl_object.version(),
        cipher=cipher[0] if cipher else None,
        peer_certificate=dict(certificate) if certificate else None,
    )


def address(value: object) -> tuple[str, int] | None:
    """(host, port) out of a socket address of any family."""
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None
