"""When the asyncio client may close a TCP socket it has closed TLS over.

A socket closed while bytes it received lie unread makes the kernel answer
with a reset, not a FIN (RFC 2525 §2.17; Linux, the BSDs), and a reset drops
what the kernel still holds to send: the end of the last write, a TLS
``close_notify``. A TLS 1.3 client nearly always has such bytes, the session
tickets its server sent after the handshake, which nothing reads. So before
the close the client drops what has come unread; with nothing left unread the
close is a FIN, and the kernel still sends what it holds. Only while unread
bytes keep coming does the client wait, until the peer has acknowledged every
byte sent (Linux's ``SIOCOUTQ``; elsewhere that cannot be asked, and the
client closes at once), after which a reset loses nothing of this end's.
Bytes that arrive after the close can still reset it: a server's answering
close_notify comes only once it has read everything, but a server that speaks
unasked as the client closes may cost the client what was still on its way.
"""

from __future__ import annotations

import os
from typing import Final, Protocol

from smtpcore._driver._kernel_queues import UNACKNOWLEDGED, UNREAD, kernel_count

__all__ = ["ready_to_close"]

_DISCARD: Final = 65536
"""The most one read takes while dropping."""


class _Socket(Protocol):
    def fileno(self) -> int: ...


def _count(fd: int, request: int | None) -> int:
    """What the ioctl ``request`` says of socket ``fd``; 0 where it cannot be asked."""
    return kernel_count(fd, request) or 0


def _drop(fd: int, size: int) -> None:
    """Read and forget at most ``size`` bytes from socket ``fd`` (non-blocking, the loop's)."""
    while size > 0:
        try:
            data = os.read(fd, min(size, _DISCARD))
        except OSError:  # BlockingIOError, or a reset: nothing more to drop
            return
        if not data:
            return
        size -= len(data)


def ready_to_close(sock: _Socket) -> bool:
    """Drop what has come unread on ``sock``, no more than it held when asked (a peer
    that keeps sending cannot hold the event loop), then whether a close now loses
    nothing: nothing is left unread (the close is a FIN), or the peer has
    acknowledged every byte sent. The caller asks again after a wait, and bounds
    the waiting; the descriptor is asked afresh each time (a transport that lost
    the connection meanwhile closed it)."""
    fd = sock.fileno()
    _drop(fd, _count(fd, UNREAD))
    return not _count(fd, UNREAD) or not _count(fd, UNACKNOWLEDGED)
