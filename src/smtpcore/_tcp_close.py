"""Closing a TCP socket without a reset that loses what was sent.

A socket closed while bytes it received lie unread makes the kernel answer
with a reset, not a FIN (RFC 2525 §2.17; Linux, the BSDs), and a reset drops
what the kernel still holds to send: the end of the last write, a TLS
``close_notify``. A TLS 1.3 client nearly always has such bytes, the session
tickets its server sent after the handshake, which nothing reads. So before
it closes a socket it has ``close``-d TLS over, a client waits until the peer
has acknowledged every byte sent (Linux's ``SIOCOUTQ``, where the kernel
says so), then reads and drops what has arrived. A reset that follows bytes
arriving later loses nothing of this end's: they were all acknowledged.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios
from collections.abc import Callable
from typing import Final, Protocol

__all__ = ["settle_before_close"]

_OUTQ: Final = getattr(termios, "TIOCOUTQ", None)
"""Linux's ``SIOCOUTQ`` (the same number): the bytes sent the peer has not acknowledged."""
_INQ: Final = getattr(termios, "FIONREAD", None)
"""``FIONREAD`` (``SIOCINQ``): the bytes received that nothing has read."""
_DISCARD: Final = 65536


class _Socket(Protocol):
    def fileno(self) -> int: ...


def _count(fd: int, request: int | None) -> int:
    """What the ioctl ``request`` says of socket ``fd``; 0 where it cannot be asked."""
    if request is None or fd < 0:
        return 0
    try:
        answer = fcntl.ioctl(fd, request, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", answer)[0])


async def settle_before_close(sock: _Socket, gone: Callable[[], bool], poll: float) -> None:
    """Wait until the peer has acknowledged every byte sent on ``sock`` (looked at every
    ``poll`` seconds, while ``gone()`` is false), then read and drop what it sent
    that nothing read, so that the close is a FIN, not a reset. The caller bounds
    the wait (a peer that takes no more). The descriptor is asked afresh after
    each wait: a transport that lost the connection meanwhile closed it, and the
    number may be another socket's by then."""
    while not gone() and _count(sock.fileno(), _OUTQ):
        await asyncio.sleep(poll)
    while not gone() and _count(fd := sock.fileno(), _INQ):
        try:
            os.read(fd, _DISCARD)  # the socket is non-blocking (the loop's)
        except OSError:  # BlockingIOError, or a reset: nothing more to drop
            return
