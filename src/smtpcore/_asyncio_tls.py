"""TLS for the asyncio server's raw-socket connections, over the socket's own reads
and writes.

asyncio's TLS transport (``loop.start_tls``, ``ssl=``) gives every connection a
256 KiB receive buffer (``sslproto``'s ``bytearray(max_size)``), made at the
handshake and kept for the connection's life: about 290 KB a TLS session,
idle or not, where a plain one costs a few. So a raw-socket connection's TLS
(STARTTLS, STLS, ``tls_on_connect``) is an :class:`ssl.SSLObject` between two
:class:`ssl.MemoryBIO`, on the connection's own
:class:`~smtpcore._asyncio_raw.RawSocketTransport`: ciphertext is read as the
plain session reads (the selector, the runner, no read while nothing waits
for the client), a TLS record's worth at a time, and written as it writes
(straight to the kernel, the rest waiting for room). What a session holds is
what is in flight: OpenSSL releases its own record buffers between records
(``SSL_MODE_RELEASE_BUFFERS``, CPython's default).

The TLS layer reads nothing from the socket before the handshake starts, so
plaintext a client pipelined behind STARTTLS reaches OpenSSL as a bad
handshake, never the session (RFC 3207 §4.2).
"""

from __future__ import annotations

import contextlib
import ssl
from typing import TYPE_CHECKING, ClassVar, Final

from smtpcore.handler import TLSInfo
from smtpcore.transport import tls_info

if TYPE_CHECKING:
    from smtpcore._asyncio_raw import RawSocketTransport

__all__ = ["TLSLayer"]

_RECORD: Final = 16384 + 256 + 5
"""A TLS 1.3 record at its largest (RFC 8446 §5.2): how much ciphertext a read
takes from the kernel at most, and how much plaintext is encrypted at once, so
that neither memory BIO grows past about one record."""
_PLAINTEXT_SLICE: Final = 16384
_UNSENT_AT_MOST: Final = 256 * 1024
"""How much ciphertext may wait for the peer to read before the layer stops reading
its records (see :meth:`TLSLayer.receive_some`)."""


class TLSLayer:
    """TLS over a :class:`~smtpcore._asyncio_raw.RawSocketTransport` that reads and
    writes its ciphertext: the connection's transport once TLS starts (its
    ``_inner``), with the same methods as the transport's, which hand on to it.

    Of the transport beneath it uses the :class:`~smtpcore.transport.Transport`
    methods and those it has for a layer above: :meth:`write_soon
    <smtpcore._asyncio_raw.RawSocketTransport.write_soon>` for records that
    cannot wait, ``unsent`` and ``all_sent`` for its bounds, ``is_closing``,
    ``abandon`` when TLS fails and ``close_when_sent`` at the close.

    A handshake that failed, or was cancelled, leaves the layer broken: every
    later read and write raises ``ConnectionResetError`` (no way back to
    plaintext, RFC 3207 §4), and the close closes the socket at once.
    """

    __slots__ = ("_broken", "_ended", "_incoming", "_outgoing", "_raw", "_shaken", "_tls")

    def __init__(
        self,
        raw: RawSocketTransport,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        self._raw = raw
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )
        self._shaken = False
        """Whether the handshake is done."""
        self._broken = False
        """Whether TLS failed (a handshake that raised, a fatal alert): nothing more
        is read or written."""
        self._ended = False
        """Whether the peer's stream has ended (its ``close_notify``, or TCP's close)."""

    # -- the handshake --------------------------------------------------------------

    async def handshake(self) -> None:
        """Run the handshake to its end; ``OSError`` (an ``ssl.SSLError``, or a
        ``ConnectionResetError`` for a peer that closed) if it fails."""
        tls = self._tls
        try:
            # A server waits for the ClientHello before OpenSSL starts: its first
            # try allocates record buffers (about 30 KB) that a silent client holds.
            if tls.server_side and not await self._fill():
                raise ConnectionResetError("the connection was closed before the TLS handshake")
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    if self._outgoing.pending:
                        await self._raw.send_all(self._outgoing.read())
                    if not await self._fill():
                        raise ConnectionResetError(
                            "the connection was closed in the TLS handshake"
                        ) from None
            if self._outgoing.pending:  # the last flight, and TLS 1.3's session tickets
                await self._raw.send_all(self._outgoing.read())
        except BaseException:
            self._fail()
            raise
        self._shaken = True

    def _fail(self) -> None:
        """TLS cannot go on: send the alert OpenSSL wrote, if the kernel takes it at
        once, and drop the connection (nothing more is read, nothing waits)."""
        self._broken = True
        self._raw.abandon(self._outgoing.read())

    async def _fill(self) -> bool:
        """Read the next ciphertext the peer sends into the TLS layer; False once the
        peer has closed its side."""
        data = await self._raw.receive_some(_RECORD)
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    # -- reads ----------------------------------------------------------------------

    def _decrypt(self, max_bytes: int) -> bytes | None:
        """Plaintext the layer has already (``b""`` once the stream has ended), or None:
        it needs more ciphertext first."""
        if self._broken:
            raise ConnectionResetError("the TLS connection is broken")
        if self._ended:
            return b""
        try:
            data = self._tls.read(max_bytes)
        except ssl.SSLWantReadError:
            self._push()  # what reading made OpenSSL answer (a key update)
            return None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            # The peer's close_notify, or its TCP close without one: the end of its
            # stream, as asyncio's TLS transport reports both. Replies may still go.
            self._ended = True
            self._push()
            return b""
        except ssl.SSLError:
            # A fatal alert, a bad record, a renegotiation refused: the connection is
            # over, as asyncio's transport reports it (the end of the stream).
            self._fail()
            self._ended = True
            return b""
        if not data:  # after the peer's close_notify, a read gives nothing
            self._ended = True
            return data
        if self._incoming.pending and len(data) < max_bytes:
            data = self._read_more(data, max_bytes)
            if self._broken:
                return data
            self._push()  # what those records made OpenSSL answer (key updates)
        return data

    def _read_more(self, data: bytes, max_bytes: int) -> bytes:
        """``data`` and the plaintext of the whole records after it in the BIO, up to
        ``max_bytes``: OpenSSL gives one record a read, and a client's records may
        each hold a byte (as asyncio's TLS transport, a read hands on all of them)."""
        parts = [data]
        got = len(data)
        while got < max_bytes and self._incoming.pending:
            try:
                more = self._tls.read(max_bytes - got)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break  # the next read reports it (or waits for the rest of a record)
            except ssl.SSLError:
                # A bad record: OpenSSL writes nothing more, so nothing read with it
                # is handed on (no command acted on whose reply could not go out).
                self._fail()
                self._ended = True
                return b""
            if not more:  # the peer's close_notify: the next read ends the stream
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    async def receive_some(self, max_bytes: int) -> bytes:
        """The next plaintext (``b""`` once the peer's stream has ended), reading more
        ciphertext as it needs. Before each read it waits while what OpenSSL
        answered unasked (a key update asked for in every record) is more than
        :data:`_UNSENT_AT_MOST` unsent: a peer that sends and never reads would
        grow it without end."""
        raw = self._raw
        while True:
            data = self._decrypt(max_bytes)
            if data is not None:
                return data
            if raw.unsent() > _UNSENT_AT_MOST:
                await raw.all_sent()
            await self._fill()

    receive_to_drop = receive_some

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """What has come and decrypts already, without waiting: None when nothing has
        (or a record came in part), ``b""`` once the peer's stream has ended."""
        data = self._decrypt(max_bytes)
        while data is None:
            if self._raw.unsent() > _UNSENT_AT_MOST:
                return None  # see receive_some
            ciphertext = self._raw.receive_nowait(_RECORD)
            if ciphertext is None:
                return None
            if ciphertext:
                self._incoming.write(ciphertext)
            else:
                self._incoming.write_eof()
            data = self._decrypt(max_bytes)
        return data

    def drained(self) -> bool:
        """Whether every byte that had come was read: none in the socket (as far as the
        last read tells), none waiting in the TLS layer."""
        return (
            not self._broken
            and not self._ended
            and not self._tls.pending()
            and not self._incoming.pending
            and self._raw.drained()
        )

    # -- writes ---------------------------------------------------------------------

    def _encrypt(self, data: bytes) -> bytes:
        """``data`` as TLS records, one record's worth of plaintext at a time (the
        outgoing BIO stays a record long)."""
        if self._broken or not self._shaken:
            raise ConnectionResetError("the TLS connection is broken")
        tls = self._tls
        outgoing = self._outgoing
        try:
            if len(data) <= _PLAINTEXT_SLICE:
                tls.write(data)
                return outgoing.read()
            view = memoryview(data)
            records = []
            for start in range(0, len(data), _PLAINTEXT_SLICE):
                tls.write(view[start : start + _PLAINTEXT_SLICE])
                records.append(outgoing.read())
            return b"".join(records)
        except ssl.SSLError:
            self._fail()
            raise

    def _push(self) -> None:
        """Write what OpenSSL has to send unasked, now, without waiting: the rest waits
        for room in the socket's write path."""
        if self._outgoing.pending and not self._broken and not self._raw.is_closing():
            self._raw.write_soon(self._outgoing.read())

    keeps_cancelled_sends: ClassVar[bool] = True
    """A cancelled :meth:`send_all` loses nothing: the plaintext is encrypted and the
    records handed to the socket's write path, which keeps them, before the wait."""

    async def send_all(self, data: bytes) -> None:
        await self._raw.send_all(self._encrypt(data))

    def send_nowait(self, data: bytes) -> int:
        """Write ``data`` now, all of it (what the kernel does not take waits for room)
        or, while earlier records still wait, none (0)."""
        raw = self._raw
        if raw.unsent():
            return 0
        records = self._encrypt(data)
        sent = raw.send_nowait(records)
        if sent < len(records):
            raw.write_soon(records[sent:])
        return len(data)

    def waiting_to_send(self) -> int:
        """The bytes of records that wait for room in the socket beneath (see
        :mod:`smtpcore.transport`): :meth:`send_nowait` hands them on and returns."""
        return self._raw.unsent()

    async def send_eof(self) -> None:
        """Nothing: TLS has no half-close a client would read as the end of replies
        (asyncio's TLS transport cannot ``write_eof`` either)."""
        if self._broken or self._raw.is_closing():
            raise ConnectionResetError("the connection is closed")

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        raise ConnectionResetError("TLS has started on this connection already")

    # -- the close --------------------------------------------------------------------

    closes_when_cancelled: ClassVar[bool] = True
    """A cancelled :meth:`aclose` still closes the socket, as the raw transport's does
    (see :mod:`smtpcore.transport`)."""

    async def aclose(self) -> None:
        """Send ``close_notify`` (not waiting for the peer's), then close the socket as a
        plain connection closes: once the kernel took what is left, or after the
        raw transport's close timeout."""
        raw = self._raw
        if self._shaken and not self._broken and not raw.is_closing():
            with contextlib.suppress(ssl.SSLError):  # SSLWantReadError: the peer's unawaited
                self._tls.unwrap()
            with contextlib.suppress(OSError):  # the close goes on whatever the write did
                self._push()
            self._broken = True  # nothing more goes through TLS
        await raw.close_when_sent()

    @property
    def tls(self) -> TLSInfo | None:
        return tls_info(self._tls) if self._shaken else None
