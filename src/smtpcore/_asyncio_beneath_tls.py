"""The TCP transport beneath an asyncio TLS transport, where asyncio's TLS layer tells
too late: a write that failed, and a client's close.

Both of the asyncio adapter's transports over asyncio's own transports
(:class:`~smtpcore.asyncio.AsyncioTransport` and
:class:`~smtpcore.asyncio.StreamTransport`) look beneath TLS alike: at each write,
whether the TCP transport is closing already (CPython gh-118950), and at a
client's close, for a way to close the TCP connection once its close_notify has
gone, without waiting for the server's (asyncio's and uvloop's TLS layers each
their own way). Kept apart from both, as the one place that reaches past
asyncio's public API for it.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from smtpcore._asyncio_close import ready_to_close

__all__ = ["_client_tls_close", "_closing", "_tcp_beneath", "_unsent"]


def _tcp_beneath(transport: asyncio.BaseTransport) -> asyncio.BaseTransport | None:
    """The TCP transport beneath ``transport`` if it is asyncio's own TLS transport
    made with TLS from the first byte (``ssl=`` to ``connect_accepted_socket``,
    ``create_server``, ``start_server``, ``create_connection``), else None: a
    plain transport, another loop's TLS transport (uvloop's, in C), or a Python
    whose ``sslproto`` changed, where only the transport's own ``is_closing()``
    tells. asyncio has no public way to it, so this is the one place that touches
    ``_SSLProtocolTransport._ssl_protocol._transport`` (the same from Python 3.10
    to 3.13); one handed to :meth:`asyncio.loop.start_tls` is known already."""
    beneath = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    return beneath if isinstance(beneath, asyncio.BaseTransport) else None


def _closing(transport: asyncio.BaseTransport, beneath: asyncio.BaseTransport | None) -> bool:
    """Whether a write to ``transport`` failed: it, or under TLS the TCP transport
    ``beneath`` it (None on a plain connection), is closing.

    asyncio's transports never raise from ``write``: the TCP transport marks itself
    closing at the write that fails (``ECONNRESET``, ``EPIPE``) and drops every
    later one, logging ``socket.send() raised exception.`` for each after the
    fifth. asyncio's TLS transport on top says so only once that transport's
    ``connection_lost`` has reached it, a pass of the loop later, on Python 3.10,
    3.11 and older 3.12 and 3.13 releases (CPython gh-118950, reported fixed in
    3.12.8, 3.13.1 and 3.14): a writer that asks it alone and writes again
    without waiting on the loop (a POP3 message streamed from disk) writes into
    the dead socket to the end. Asking the TCP transport too is a workaround for
    those Pythons, and can go once the oldest Python supported has the fix."""
    return transport.is_closing() or (beneath is not None and beneath.is_closing())


def _unsent(transport: asyncio.BaseTransport, beneath: asyncio.BaseTransport | None) -> int:
    """The bytes written to ``transport`` that wait to be sent: queued in it, and under
    TLS in the TCP transport ``beneath`` it (asyncio's TLS transport counts only its
    own buffers). Their count falls only as the peer makes room by reading (see
    :mod:`smtpcore.transport`'s ``waiting_to_send``)."""
    queued = cast(asyncio.WriteTransport, transport).get_write_buffer_size()
    if beneath is None:
        return queued
    return queued + cast(asyncio.WriteTransport, beneath).get_write_buffer_size()


def _client_side(transport: asyncio.BaseTransport) -> bool:
    """Whether ``transport`` runs TLS as its client (asked before its close: asyncio's
    TLS transport, once closed, may answer nothing)."""
    if transport.is_closing():
        return False
    tls = transport.get_extra_info("ssl_object")
    return isinstance(tls, ssl.SSLObject | ssl.SSLSocket) and not tls.server_side


def _client_tls_close(
    transport: asyncio.BaseTransport, beneath: asyncio.BaseTransport | None
) -> Callable[[], Awaitable[None]] | None:
    """What closes the TCP connection under a client's TLS ``transport``, about to be
    closed, once its close_notify has gone, without waiting for the server's (see
    :func:`_close_beneath_tls`); None for a plain transport, a server's TLS, or a
    TLS transport with no way to what is beneath it.

    The TCP transport ``beneath`` where it is known (asyncio's TLS transport, or one
    this end started); on uvloop, whose TLS transport shows nothing of its TCP
    transport, the TLS protocol between them (see :func:`_end_uvloop_tls`)."""
    if not _client_side(transport):
        return None
    if beneath is not None:
        return functools.partial(_close_beneath_tls, transport, beneath)
    protocol = transport.get_extra_info("uvloop.sslproto")
    if callable(getattr(protocol, "eof_received", None)):
        return functools.partial(_end_uvloop_tls, transport, protocol)
    return None


_TLS_FLUSH_POLL: Final = 0.01
"""How often a client's TLS close looks whether its last bytes have gone to the
socket (see :func:`_close_beneath_tls`): asyncio says no such moment."""


async def _close_beneath_tls(tls: asyncio.BaseTransport, beneath: asyncio.BaseTransport) -> None:
    """Close the TCP transport ``beneath`` a client's TLS transport ``tls``, already
    closed, once every byte, the close_notify last, has gone to the socket.

    RFC 8446 §6.1 does not have the side that closes wait for the peer's answering
    close_notify (trio's close does not), and a server gone silent (a client's
    timeout) never sends it: asyncio's TLS close would wait for it, up to its
    shutdown timeout. The TCP transport's own close sends what it holds and closes
    the socket; an ``abort()`` would drop what is still queued. uvloop's TLS layer
    loses what its TCP transport still queues when that transport is closed under
    it, so the close waits until nothing is queued on either, and then, while the
    server's unread bytes keep coming, until a reset would lose nothing (see
    :func:`~smtpcore._asyncio_close.ready_to_close`). The caller bounds the wait (a
    peer that takes no more bytes) and waits for ``connection_lost``."""
    sock = beneath.get_extra_info("socket")
    while not beneath.is_closing():
        sent = not (_queued(tls) or _queued(beneath))
        if sent and (sock is None or ready_to_close(sock)):
            beneath.close()
            return
        await asyncio.sleep(_TLS_FLUSH_POLL)


async def _end_uvloop_tls(tls: asyncio.BaseTransport, protocol: Any) -> None:
    """Close the TCP transport beneath uvloop's TLS transport ``tls``, already closed,
    once its close_notify has gone to it, through uvloop's TLS ``protocol``: told
    then that the peer's stream has ended (``eof_received``), it ends its close
    (``_on_shutdown_complete``) with the TCP transport's ``close()``, which sends
    what that transport still queues and closes the socket, where it would wait for
    the server's close_notify up to its shutdown timeout.

    Nothing queued on ``tls`` after its close means the close_notify has gone to
    the TCP transport (uvloop counts its TLS layer's backlog and outgoing buffer,
    and sends the close_notify as soon as both are empty). Told sooner, while it
    still flushes, it would close without the close_notify; after the connection
    is lost it does nothing. A lost connection (uvloop's TLS protocol lets go of
    its TCP transport, whose socket ``tls`` then no longer shows) ends the wait: a
    defensive guard, should the count of what is queued ever stay as it was (it
    falls to 0 with the socket on uvloop 0.23). The caller bounds the wait."""
    while _queued(tls):
        if tls.get_extra_info("socket") is None:
            return
        await asyncio.sleep(_TLS_FLUSH_POLL)
    protocol.eof_received()


def _queued(transport: asyncio.BaseTransport) -> int:
    """The bytes ``transport`` holds unsent: asyncio's transports and uvloop's (which
    subclass none of asyncio's classes) all say it."""
    return cast(asyncio.WriteTransport, transport).get_write_buffer_size()
