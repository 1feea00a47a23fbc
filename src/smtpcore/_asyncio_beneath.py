"""The TCP transport beneath an asyncio TLS transport: where a failed write shows at once.

asyncio's transports never raise from ``write``. The TCP transport marks itself
closing (``is_closing()``) at the write that fails (``ECONNRESET``, ``EPIPE``)
and drops every later one, logging ``socket.send() raised exception.`` for each
after the fifth. The TLS transport on top says it is closing only once the TCP
transport's ``connection_lost`` has reached it, a pass of the loop later, and
its protocol hears of it a pass after that: a writer that asks only the TLS
transport, and writes again without waiting on the loop (a POP3 message
streamed from a local disk), writes into the dead socket until it ends.

So a TLS connection is watched through the TCP transport beneath it too. The
one asyncio hands to :meth:`asyncio.loop.start_tls` is known to whoever calls
it; a transport made with TLS from the first byte (``ssl=`` to
``connect_accepted_socket``, ``create_server``, ``create_connection``) has no
public way to it, and :func:`tcp_beneath` finds it in the standard library's
``asyncio.sslproto`` (the same attributes from Python 3.10 to 3.13).
"""

from __future__ import annotations

import asyncio

__all__ = ["tcp_beneath"]


def tcp_beneath(transport: asyncio.BaseTransport) -> asyncio.BaseTransport | None:
    """The TCP transport beneath ``transport`` if it is asyncio's own TLS transport
    (``_SSLProtocolTransport``, its protocol's ``_transport``), else None: a plain
    transport, another loop's TLS transport (uvloop's, in C), or a Python whose
    ``sslproto`` changed, where only the TLS transport's own ``is_closing()`` tells."""
    beneath = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    return beneath if isinstance(beneath, asyncio.BaseTransport) else None
