"""The clients' look at bytes that reached the socket but not the client.

Before a client writes while no answer is due (a POP3 command, SMTP's end of
data after streamed content), a response the server sent meanwhile answers
nothing, and left for the next read it would pass for that write's answer.
A read that never waits (the transport's ``receive_nowait``) cannot give
every such byte: a TLS record on trio needs a read that may wait to decrypt,
and an asyncio event loop the application blocked has yet to read the
socket. The transport's ``arrived`` says such bytes are there; this module
reads them, briefly, for both clients: one rule and one bound.
"""

from __future__ import annotations

from typing import Final

from smtpcore._driver._transport import Link

__all__ = ["ARRIVED_IN_MEMORY_LOOK", "ARRIVED_LOOK", "look_at_arrived", "receive_within"]

ARRIVED_LOOK: Final = 0.5
"""Seconds a client reads a readable socket for (:func:`look_at_arrived`): bytes
already there decrypt at once; a response is not in them if none comes by then
(a TLS record with no application data: a KeyUpdate, a late session ticket,
RFC 8446 §4.6), which is what such a record costs the look. Also the bound for a
record that came in part, whose rest is on its way."""

ARRIVED_IN_MEMORY_LOOK: Final = 0.005
"""Seconds the look reads for when what arrived is all in memory already (the
link's ``arrived_in_memory``: on trio, a TLS record read in the same read as the
reply before it): decrypting it needs no wait, so a record with no application
data there (a session ticket or a KeyUpdate behind a reply) costs about this, not
:data:`ARRIVED_LOOK`. Not zero: a deadline already past as the read starts cancels
it before it decrypts anything (the look then waits its whole bound), and trio
writes what OpenSSL has to send while it reads (an answer to a post-handshake
message, RFC 8446 §4.6) after a pass through the scheduler, where a deadline
gone by then would cut the write off and break the TLS stream."""


async def receive_within(transport: Link, seconds: float, max_bytes: int) -> bytes:
    """One read of at most ``max_bytes`` octets under a deadline of ``seconds``
    (``TimeoutError`` after): the link's ``receive_within``, or, for a stand-in for
    a Link without one (a wrapper that shows the wire), its ``deadline``."""
    within = getattr(transport, "receive_within", None)
    if within is not None:
        data: bytes = await within(seconds, max_bytes)
        return data
    async with transport.deadline(seconds):
        return await transport.receive_some(max_bytes)


async def look_at_arrived(transport: Link, max_bytes: int) -> bytes | None:
    """What has reached the socket that a read that never waits cannot give, read
    for at most :data:`ARRIVED_LOOK` seconds: ``None`` when nothing has (the
    transport's ``arrived``; a stand-in for a Link may not have it) or it held no
    application data, ``b""`` for the server's close or a failed read. What is
    all in memory already (the link's ``arrived_in_memory``) is read for
    :data:`ARRIVED_IN_MEMORY_LOOK` seconds first; only if something is still there
    then (more came meanwhile, or the deadline passed before the read began) is
    the whole bound waited for.

    trio over TLS: the deadline cancels ``SSLStream.receive_some`` where it waits
    for the socket, before it has taken a byte, so the stream stays usable (trio
    warns only of a cancelled handshake or ``send_all``; the one write a read
    makes, the answer a KeyUpdate may ask for, RFC 8446 §4.6.3, goes out as the
    record is read). No look right after a handshake: the server's TLS 1.3
    session tickets come then, with nothing behind them until the client speaks,
    and the look would wait out its whole bound. The POP3 client skips it before
    its first command after STLS; SMTP's comes only before an end of data, after
    EHLO's reply took the tickets."""
    arrived = getattr(transport, "arrived", None)
    if arrived is None or not arrived():
        return None
    in_memory = getattr(transport, "arrived_in_memory", None)
    if in_memory is not None and in_memory():
        data = await _read_within(transport, ARRIVED_IN_MEMORY_LOOK, max_bytes)
        if data is not None or not arrived():
            return data
    return await _read_within(transport, ARRIVED_LOOK, max_bytes)


async def _read_within(transport: Link, seconds: float, max_bytes: int) -> bytes | None:
    """One read under a deadline of ``seconds``: ``None`` when none came by then,
    ``b""`` for the server's close or a failed read."""
    try:
        return await receive_within(transport, seconds, max_bytes)
    except TimeoutError:
        return None
    except OSError:
        return b""
