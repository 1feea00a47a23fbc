"""The byte stream a mail session runs over, for authors of new transports.

A :class:`Transport` is one connected byte stream and nothing more: receive
some bytes, send all of them, start TLS in place, close, and say who is at
either end. Everything else is shared: the protocol lives in the machines,
the sessions in the adapters' one driver, and timing (every deadline, and
the watchdog that ends a session whose client went quiet) in the framework
adapter that runs the session. A transport never looks at a clock: its
waits are interrupted by the framework's own cancellation, from outside.

So to serve SMTP over something the adapters do not know (a socket library,
a tunnel, a test harness), write a :class:`Transport` whose waits are the
framework's own waits, and hand it to that framework's adapter::

    await server.serve_transport(MyTransport(...))       # smtpcore.asyncio or smtpcore.trio
    client = SMTPClient.over_transport(MyTransport(...), ...)

``docs/tutorials/transport.rst`` walks through one.

A transport may also have a ``channel_binding(kind: str) -> bytes | None``
method: the channel binding data of its TLS connection (RFC 5056) of that
type, or ``None``. The sessions ask it for ``"tls-exporter"`` (RFC 9266: 32
octets of keying material exported with the label
``EXPORTER-Channel-Binding`` and an empty context) after each handshake;
with the data, a server offers ``SCRAM-SHA-256-PLUS`` and a client uses it
(see :mod:`smtpcore.sasl`). The adapters' own transports have no such
method: the standard library's :mod:`ssl` cannot export keying material,
and its ``tls-unique`` is undefined for TLS 1.3.

A transport may also have an ``async send_eof() -> None`` method: shut down
the sending side once everything written has gone (TCP's FIN), the
receiving side still open, where the stream can (plain TCP; not TLS, where
it does nothing). A server that ends a session on its own (a 421) uses it
to close gracefully while its client may still be sending; without it the
server only reads and drops what still comes before it closes.

A transport given under TLS whose handshake is not made yet (a
``trio.SSLStream`` makes it on first use) may have an
``async finish_handshake() -> None`` method: a client, and a server's session
(``serve_transport``, ``serve_stream``), call it first, under their TLS
handshake timeout, so that :attr:`Transport.tls` describes the session from
its first byte. A failed handshake is reported as their own handshakes are:
the client's connection error (a certificate it cannot verify is its
refusal); on the server, one INFO line, and the session ends unserved.

A transport may also have a ``keeps_cancelled_sends`` attribute: ``True``
when a cancelled :meth:`Transport.send_all` loses none of its data, because
the transport has already taken all of it and still writes it (asyncio's
transports buffer every byte written; the library's asyncio transports say
so). A server whose session a timeout or a shutdown interrupts in a write
then still ends it with its last word (SMTP's ``421``, POP3's closing
``-ERR``), after the replies it was writing. Absent, or anything but
``True``, a cancelled ``send_all`` is taken to have written only a part of
its data and dropped the rest (trio's streams do): the peer may then hold
half a reply, a last word would land inside it, mid-line (RFC 5321 §4.2),
so the session just closes. That is the safe default: a missing ``421`` is
a missing courtesy, a spliced one corrupts the reply stream. ``True``
promises more than the bytes: after a cancelled ``send_all`` the transport
stays usable, what it kept still goes out, later writes go out after it, in
order, and ``aclose`` writes it before closing (a cancelled one, where the
transport says ``closes_when_cancelled``, may drop it). A transport over a layer
that a cancelled write breaks (trio's ``SSLStream``) cannot say ``True``.

A transport may also have a ``closes_when_cancelled`` attribute: ``True``
when a cancelled :meth:`Transport.aclose` still closes the connection,
dropping what it had yet to send (the library's own transports say so: the
asyncio ones abort the connection, trio's drops what it still holds and
shields the close of its stream). A server then
cancels the close of a session whose client did not take its last write in
time, rather than wait for room that will not come. Absent, or anything but
``True``, the close is left to run to its end within the bound it sets
itself: a close that gives up waiting and then aborts would never reach its
abort if cancelled, and the connection would stay open. It is read off the
transport's class (``closes_when_cancelled: ClassVar[bool] = True``), never
the instance: a wrapper of yours whose ``__getattr__`` forwards to a library
transport does not hand on that transport's ``True`` for its own ``aclose``,
which may await something (a log, a metrics call) before it closes what it
wraps. Declare it on the wrapper's class only if its close still closes when
cancelled at any of its waits.

A transport may also have a ``waiting_to_send() -> int`` method: how many
bytes it has taken (from a :meth:`Transport.send_all` that returned, or one
that was cancelled) still wait for room that the peer makes only by reading;
0 for none (``True`` says some, of a count it does not know). A server asks
it when a session's timeout goes off while the session waits for its client,
and again a second later: bytes still waiting, and no fewer, were not taken
by a client that has stopped reading, and the session's goodbye is treated
as after a write the client did not take in its time (SMTP's ``421`` gets a
second at most, the close is cancelled where ``closes_when_cancelled`` says
it may be), rather than wait behind them for a whole timeout, then the
close's. A client that reads, if too slowly to take them within the
timeout, takes some in that second, and its goodbye waits for it as any
other's (with ``True`` it cannot: a transport that says only that some wait
has a slow reader cut off as one that stopped reading, so count if you can).
Absent, raising, or answering anything but a count or ``True``, nothing is
taken to wait (the library's own transports have it: their writes may leave
bytes for the event loop to send, while the session reads). Not asked while
the server stops, nor after a write the timeout cut off, which is known not
taken.

With it, a transport may have an ``unacknowledged() -> int | None`` method: how
many bytes the kernel has sent or holds to send that the peer has not
acknowledged yet (Linux's ``SIOCOUTQ`` on the socket beneath, under TLS too),
or None where it cannot say. A count that falls shows a peer reading where
``waiting_to_send()`` cannot: the peer's window reopens each time it has read a
segment's worth or so, while the socket has room again, and the transport's
count falls, only once a third of its send buffer is acknowledged, which a
client reading a few hundred octets a second takes minutes to do. Where it
answers a count, the server looks at both counts once a second for up to six
seconds, and the first fall of either ends the watch (the client is reading);
without it, or answering anything but a count of 0 or more, or raising, it
looks once, after a second, at ``waiting_to_send()`` alone. The library's own
transports have it.
"""

from __future__ import annotations

import ssl
from typing import Any, Protocol, runtime_checkable

from smtpcore.handler import TLSInfo

__all__ = ["TLSInfo", "Transport", "tls_info"]


@runtime_checkable
class Transport(Protocol):
    """One connected byte stream, as a session needs it.

    Errors of the connection itself (reset, broken pipe, a failed TLS
    handshake) are raised as :class:`OSError` (``ssl.SSLError`` is one), so
    that a session tells a broken connection from a bug. Every wait must be
    one the framework can cancel: that is how timeouts reach a transport.

    Optional, looked up when present: ``channel_binding(kind)``, the TLS
    channel binding data that SCRAM-SHA-256-PLUS needs, ``send_eof()``,
    the half-close of a session the server ends on its own,
    ``finish_handshake()``, the handshake of a stream given under TLS, and
    ``keeps_cancelled_sends``, whether a cancelled :meth:`send_all` still
    writes all of its data, ``closes_when_cancelled``, whether a cancelled
    :meth:`aclose` still closes, ``waiting_to_send()``, how many bytes it took
    still wait for the peer to read, and ``unacknowledged()``, how many the kernel
    sent that the peer has not acknowledged (see the module's description). No other method is
    ever called: the adapters' own transports have fast paths of their own
    (``send_nowait``, ``receive_nowait`` and others), which a transport of yours
    does not take on by having methods of those names.
    """

    async def receive_some(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes, waiting for at least one; ``b""`` once the peer
        closed its side."""
        ...

    async def send_all(self, data: bytes) -> None:
        """Write all of ``data``, waiting while the peer is slow to read.

        Cancelled, it may have written a part of ``data`` only, unless the
        transport's ``keeps_cancelled_sends`` is ``True`` (see the module's
        description)."""
        ...

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        """Run the TLS handshake over this stream (RFC 3207 §4, RFC 8314 §3.3); from
        then on, bytes go through TLS.

        Bytes received before the handshake and not yet returned by
        :meth:`receive_some` must be dropped: they came in plaintext and must
        never be taken as protected (RFC 3207 §6). A stream that cannot be
        upgraded raises :class:`OSError`.

        A handshake that raised, a cancelled one included, leaves no way back to
        plaintext (RFC 3207 §4): the peer may be mid-handshake, and a plain
        reply (a shutdown's ``421``) would land among its TLS records. Every
        later :meth:`receive_some` and :meth:`send_all` raises :class:`OSError`,
        as over a reset connection, and :meth:`aclose` still closes the stream.
        """
        ...

    async def aclose(self) -> None:
        """Close the stream; safe to call twice, and bounded in time even when the peer
        does not read. It is cancelled only where the transport's
        ``closes_when_cancelled`` is ``True`` (see the module's description)."""
        ...

    @property
    def peer_address(self) -> tuple[str, int] | None:
        """The remote host and port; ``None`` where there is none (a pipe)."""
        ...

    @property
    def local_address(self) -> tuple[str, int] | None:
        """The local host and port; ``None`` where there is none."""
        ...

    @property
    def tls(self) -> TLSInfo | None:
        """The TLS state once a handshake is done, else ``None``."""
        ...


def tls_info(ssl_object: Any) -> TLSInfo | None:
    """Describe a finished handshake, for :attr:`Transport.tls`.

    ``ssl_object`` is an :class:`ssl.SSLObject` or :class:`ssl.SSLSocket`, or
    anything with their ``version()``, ``cipher()`` and ``getpeercert()`` (a
    ``trio.SSLStream``); ``None`` gives ``None``.
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
