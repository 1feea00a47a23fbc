"""What the kernel holds in a socket's queues, asked with one ``ioctl`` each.

Shared by both adapters: the asyncio client's TLS close asks whether a close
now loses nothing (:mod:`smtpcore._asyncio_close`), and a server's session whose
timeout went off with replies unsent asks whether its client is still reading
them, if slowly (:meth:`~smtpcore._driver._transport.LinkBase.unacknowledged`).
A peer's reading shows at the sender only as its acknowledgements: the count of
bytes sent and not yet acknowledged falls each time the peer's window reopens,
long before the socket has room enough to be writable again (a third of its
send buffer). Linux's ``SIOCOUTQ`` gives that count; ``SIOCOUTQNSD`` (bytes not
yet sent) falls only as the kernel sends more, which a closed window holds back,
so it says nothing more. Elsewhere, or on a descriptor that is no socket, the
count cannot be asked.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from typing import Final, Protocol

__all__ = ["UNACKNOWLEDGED", "UNREAD", "kernel_count", "unacknowledged"]

_ioctl: Callable[[int, int, bytes], bytes] | None
_outq: int | None
_inq: int | None
try:
    import fcntl
    import termios
except ImportError:  # no ioctl on this system (Windows): no count can be asked
    _ioctl, _outq, _inq = None, None, None
else:
    _ioctl = fcntl.ioctl
    _outq = getattr(termios, "TIOCOUTQ", None)
    _inq = getattr(termios, "FIONREAD", None)

UNACKNOWLEDGED: Final = _outq if sys.platform == "linux" else None
"""Linux's ``SIOCOUTQ`` (the same number as ``TIOCOUTQ``, 0x5411): the bytes sent
(or queued to send) that the peer has not acknowledged. ``TIOCOUTQ`` means other
things on a socket elsewhere (or fails), so it is asked on Linux only."""

UNREAD: Final = _inq
"""``FIONREAD`` (``SIOCINQ``): the bytes received that nothing has read."""


class HasFileno(Protocol):
    """A socket of any framework's (asyncio's ``TransportSocket``, trio's)."""

    def fileno(self) -> int: ...


def kernel_count(fd: int, request: int | None) -> int | None:
    """What the ioctl ``request`` says of socket ``fd``: a count, or None where it cannot
    be asked (no ioctl or no such request here, a closed descriptor, one that is no
    socket)."""
    if _ioctl is None or request is None or fd < 0:
        return None
    try:
        answer = _ioctl(fd, request, b"\0\0\0\0")
    except OSError:
        return None
    count = int(struct.unpack("i", answer)[0])
    return count if count >= 0 else None


def unacknowledged(sock: HasFileno | None) -> int | None:
    """The bytes written to ``sock`` that its peer has not acknowledged yet, or None
    where the kernel cannot say (not Linux, no socket, a closed one). Asked only as a
    session's timeout goes off (one system call), never on the way of a message."""
    if sock is None or UNACKNOWLEDGED is None:
        return None
    try:
        fd = sock.fileno()
    except (OSError, ValueError):  # closed meanwhile
        return None
    return kernel_count(fd, UNACKNOWLEDGED)
