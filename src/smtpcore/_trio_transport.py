"""The trio adapter's transport over any ``trio.abc.Stream``:
:class:`~smtpcore.trio.TrioTransport`.

A ``trio.SocketStream`` is read and written on its socket directly while in
plaintext, a server's replies held to the end of the scheduler's batch
(:mod:`smtpcore._trio_held`); any other stream, and TLS (a ``trio.SSLStream``
this transport wraps the stream in, or one it is given), through trio's own
methods. Kept apart from the server and client that make it, which only
construct it.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Awaitable, Callable
from sys import intern
from typing import ClassVar, Final

import trio

from smtpcore._driver import _transport as shared_transport
from smtpcore._driver import address, tls_info
from smtpcore._driver._kernel_queues import unacknowledged as kernel_unacknowledged
from smtpcore._driver._peer_hosts import shared_peer_host
from smtpcore._trio_held import HOLD_AT_MOST, HeldWrites
from smtpcore.handler import TLSInfo

__all__ = ["TrioTransport"]

UNDECRYPTED: Final = "_incoming"
"""trio's (private) name for a ``trio.SSLStream``'s ``ssl.MemoryBIO`` of what it read
from the socket and has yet to decrypt: a TLS record that came in the same read as
the one before it stays there. Read defensively (a renamed attribute only hides
such a record again), and a test fails if trio renames it."""

_REST_STEP: Final = 1024
"""How much of a held write's rest is handed to the kernel at a time: a client that
reads, however slowly, is seen to take some within a session's probe (see
:meth:`TrioTransport.waiting_to_send`). Only the rest of a held write goes in steps,
written while the session reads; every other write goes whole."""


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The socket under ``stream``, through TLS layers, if there is one."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return stream.socket if isinstance(stream, trio.SocketStream) else None


WAITS_AFTER_A_MISS: Final = 8
"""How many plain-socket reads after one that found nothing wait at once.

A read first lets the other tasks run once (the checkpoint it makes anyway) and
then looks: a server answering many clients finds, more often than not, that a
client's next command arrived meanwhile, and that costs far less than a wait,
which registers with epoll and unregisters after (over 99% of reads hit under 20
busy sessions). A connection alone with its peer finds nothing that way, so after
a miss the next few reads wait at once. asyncio gains nothing from it: a task that
yields runs again before the reads of the loop's next pass are delivered."""


def _closed_meanwhile() -> ConnectionResetError:
    """What a plain-TCP read or write raises that finds its connection closed by another
    task while it waited."""
    return ConnectionResetError("the connection is closed")


class TrioTransport(shared_transport.FastPaths):
    """A :class:`~smtpcore.transport.Transport` over any ``trio.abc.Stream``.

    A ``trio.SocketStream`` is read and written through its socket directly
    while in plaintext (trio's layers cost more than the read on a busy
    session); any other stream (a ``trio.SSLStream``, a memory stream, a
    user's own) through its own methods. ``start_tls`` wraps the stream in a
    ``trio.SSLStream``.

    The stream is the transport's to close (:meth:`aclose`): closed from
    another task, a ``trio.SocketStream``'s socket is not asked again before
    each read and write (a Python call each, on every command), so a read or
    write may go to the descriptor's number after the kernel has given it to
    another connection or file. End a session by cancelling it, or with the
    client's ``close()``.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._base = stream
        self._stream: trio.abc.Stream = stream
        self._ssl: trio.SSLStream[trio.abc.Stream] | None = (
            stream if isinstance(stream, trio.SSLStream) else None
        )
        self._closed = False
        self._waits_left = 0
        """Reads left that wait at once, without the look first (see
        :data:`WAITS_AFTER_A_MISS`)."""
        self._fd = -1
        """The socket's descriptor while plain-TCP reads and writes go to it."""
        self._drained = False
        if isinstance(stream, trio.SocketStream):
            # A SocketStream over TCP has TCP_NODELAY set already (trio does it).
            self._fd = stream.socket.fileno()
        if self._ssl is not None:
            self.finish_handshake = self._finish_handshake

    keeps_cancelled_sends: ClassVar[bool] = False
    """A cancelled :meth:`send_all` drops what it had not written yet (trio's streams do,
    and so does the write straight to a ``SocketStream``'s socket): the peer may hold
    a part of it (see :mod:`smtpcore.transport`)."""

    finish_handshake: Callable[[], Awaitable[None]] | None = None
    """Finish the handshake of a ``trio.SSLStream`` given as it came (see
    :mod:`smtpcore.transport`); None for any other stream, so that a client over plain
    TCP pays nothing for it at connect."""

    _readable: Callable[[], object] | None = None
    """Asks the kernel whether the socket (under TLS too) is readable
    (:meth:`settled`): made at a client's first message, then one system call and no
    Python call a look; a server's sessions, which never ask, have none."""

    _writes: HeldWrites | None = None
    """The server's held writes (see :class:`~smtpcore._trio_held.HeldWrites`), set by
    the server on a connection it accepted; None writes every reply at once."""
    # What held writes keep, set on a connection only once it has some: an idle
    # session keeps none of them.
    _held: bytes | None = None
    """What ``_writes`` holds for this connection until the batch's end."""
    _rest_written: trio.Event | None = None
    """Set once the rest of a held write, which the kernel did not take at the batch's
    end, has gone (a task of the server's writes it)."""
    _rest_left: int = 0
    """What :meth:`_write_rest` has yet to hand the kernel, from the step it is at."""
    _write_failed: OSError | None = None
    """Why a held write failed, for the session's next write to raise."""
    _tls_broken: bool = False
    """Whether the ``trio.SSLStream`` was found broken, which trio makes it when a write
    through it did not finish (cut off part-way, or failed): trio then refuses every
    read and write on it, so what is left to do (the server's linger) goes to the
    stream under it. Found as the linger starts (:meth:`send_eof` asks, a read
    fails), not when a write is cancelled: one cancelled before it sent anything
    leaves the stream whole, and its close says so (TLS's close_notify)."""

    async def receive_some(self, max_bytes: int) -> bytes:
        if self._fd >= 0 and not self._closed:
            return await self._receive_plain(max_bytes)
        self._drained = False
        try:
            return bytes(await self._stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(str(exc) or "connection lost") from exc

    def receive_or_wait(self, max_bytes: int) -> Awaitable[bytes]:
        """What a server's session awaits for its client's bytes, as :meth:`receive_some`
        gives them: over plain TCP the socket's own read, without that method's
        coroutine around it, so that an idle session is suspended one frame less
        deep, at no call more."""
        if self._fd >= 0 and not self._closed:
            return self._receive_plain(max_bytes)
        return self.receive_some(max_bytes)

    async def _receive_plain(self, max_bytes: int) -> bytes:
        """Read the socket itself, with the checkpoint trio's own read makes but
        without its layers, which cost more than the read on a busy session.

        The checkpoint comes first, and the read then often finds the
        client's next command without registering with epoll to wait for it
        (see :data:`WAITS_AFTER_A_MISS`).
        """
        fd = self._fd
        if self._waits_left:
            self._waits_left -= 1
        else:
            await trio.lowlevel.checkpoint()  # a read is a checkpoint, waiting or not
            if self._fd != fd:
                raise _closed_meanwhile()
            data = self._read_at_once(fd, max_bytes)
            if data is not None:
                return data
        while True:
            try:
                await trio.lowlevel.wait_readable(fd)
            except trio.ClosedResourceError as exc:  # closed by another task meanwhile
                raise _closed_meanwhile() from exc
            if self._fd != fd:
                raise _closed_meanwhile()
            try:
                data = os.read(fd, max_bytes)
            except BlockingIOError:  # pragma: no cover - a spurious wake-up
                continue
            self._drained = len(data) < max_bytes
            return data

    def _read_at_once(self, fd: int, max_bytes: int) -> bytes | None:
        """The read after the checkpoint: the bytes, or None when nothing has come (and
        the next few reads wait at once: :data:`WAITS_AFTER_A_MISS`). Tried here rather than in
        :meth:`_receive_plain`: the ``BlockingIOError`` of a miss, raised in the
        coroutine's frame, would give it a frame object, kept for as long as the
        session then waits for its client (208 bytes an idle session)."""
        try:
            data = os.read(fd, max_bytes)
        except BlockingIOError:
            self._waits_left = WAITS_AFTER_A_MISS
            return None
        self._drained = len(data) < max_bytes
        return data

    def drained(self) -> bool:
        """Whether the last read took everything that had arrived by then: a plain
        socket's read that gave fewer octets than asked for."""
        return self._drained

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """What the kernel holds already, without waiting (plain TCP only: a TLS
        stream's records cannot be read without waiting, so ``None``, as when
        nothing has arrived; ``b""`` once the peer has closed). A failed read (a
        reset) is the end of the stream too: the caller looks here for a reply
        no command asked for, and what it read before, a ``421`` say, is the news
        to give, not the reset after it (RFC 5321 §3.8)."""
        if self._fd < 0 or self._closed:
            return None
        self._drained = False
        try:
            return os.read(self._fd, max_bytes)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def settled(self) -> bool:
        """Whether nothing has arrived that no read has taken: the socket has nothing
        to read, nor, over TLS, the ``SSLStream`` a record (:meth:`arrived`), in one
        call. Asked before a message's first command, after a wait between calls that
        :meth:`drained`, which speaks of the last read, knows nothing of."""
        if self._closed:
            return False
        stream = self._ssl
        if stream is not None and (
            stream.pending() or getattr(getattr(stream, UNDECRYPTED, None), "pending", 0)
        ):
            return False
        readable = self._readable
        if readable is None:
            sock = _socket_of(self._stream)
            if sock is None:  # another kind of stream: it cannot tell
                return False
            readable = self._readable = shared_transport.readable_probe(sock.fileno())
        return not readable()

    def arrived(self) -> bool:
        """Whether bytes wait that :meth:`receive_nowait` cannot give: over TLS, a
        record decrypted and not yet read, one read and not yet decrypted (it came
        in the same read as the record before it: :data:`UNDECRYPTED`), or the
        socket under the ``SSLStream`` readable. A read then starts at once; the
        caller bounds it with a deadline, for a record that came in part. Asked
        rather than tried: a receive that meets a cancelled scope is cancelled
        before it reads anything, and trio leaves an ``SSLStream`` unusable if one
        is cancelled mid-handshake. ``False`` in plaintext, where
        :meth:`receive_nowait` reads the kernel."""
        stream = self._ssl
        if stream is None or self._closed:
            return False
        if stream.pending() or getattr(getattr(stream, UNDECRYPTED, None), "pending", 0):
            return True
        sock = _socket_of(stream)
        return sock is not None and shared_transport.readable_now(sock.fileno())

    def arrived_in_memory(self) -> bool:
        """Whether what :meth:`arrived` finds is all in the ``SSLStream`` already (a
        record decrypted, or read and not yet decrypted) and the socket has nothing:
        trio's read decrypts it before it first waits on the socket, so a look at it
        needs no wait. A record with no application data there (a late session
        ticket, a KeyUpdate: RFC 8446 §4.6) would otherwise keep the look waiting on
        the socket for its whole bound. ``False`` for a stream not over a socket,
        which cannot say the socket has nothing."""
        stream = self._ssl
        if stream is None or self._closed:
            return False
        if not (stream.pending() or getattr(getattr(stream, UNDECRYPTED, None), "pending", 0)):
            return False
        sock = _socket_of(stream)
        return sock is not None and not shared_transport.readable_now(sock.fileno())

    def send_nowait(self, data: bytes) -> int:
        """Write what the kernel takes at once (plain TCP only; else ``0``)."""
        if self._closed:
            raise ConnectionResetError("the connection is closed")
        if self._fd < 0:
            return 0  # TLS records and other streams go through send_all
        writes = self._writes
        if writes is not None:
            if self._rest_written is not None or self._write_failed is not None:
                return 0  # behind what waits for room (send_all waits, or raises)
            if writes.holds():  # others write in this batch: written with theirs
                held = self._held
                if (0 if held is None else len(held)) + len(data) <= HOLD_AT_MOST:
                    return writes.hold(self, data)
                if held is not None:
                    return 0  # too much to hold: send_all writes what waits, then this
        # Straight to the kernel: trio's send passes through the scheduler even
        # when it need not wait. The session's next read is its checkpoint.
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0

    def _write_held(self) -> None:
        """The batch's end (:meth:`HeldWrites.before_io_wait`): write what is held. The
        rest, if the kernel does not take it all, is written by a task of the
        server's, which waits for room; a failure is raised by the session's next
        write (its next read finds the connection gone)."""
        data = self._held
        if data is None:  # written meanwhile (a later send_all, the close)
            return
        self._held = None
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._write_failed = exc
            return
        if sent < len(data):
            done = self._rest_written = trio.Event()
            assert self._writes is not None  # only held writes come here
            try:
                self._writes.spawn(self._write_rest, data[sent:], done)
            except RuntimeError as exc:  # the server's nursery takes no more tasks
                self._rest_written = None
                self._write_failed = ConnectionResetError(str(exc))

    async def _write_rest(self, data: bytes, done: trio.Event) -> None:
        """Write the rest of a held write as room comes (see :meth:`_write_held`), until
        the connection closes (:meth:`_send_plain` stops then), a step of
        :data:`_REST_STEP` at a time, so that :meth:`waiting_to_send` sees a client
        that reads, if slowly, take some of it."""
        try:
            for start in range(0, len(data), _REST_STEP):
                self._rest_left = len(data) - start
                await self._send_plain(data[start : start + _REST_STEP])
        except OSError as exc:
            self._write_failed = exc
        finally:
            self._rest_left = 0
            self._rest_written = None
            done.set()

    def waiting_to_send(self) -> int:
        """How much of the rest of a held write still waits for room, written by a
        task of the server's while the session reads (see :mod:`smtpcore.transport`),
        counted down a step at a time. Not a reply still held for the batch's end,
        which has yet to be tried."""
        return self._rest_left if self._rest_written is not None else 0

    def unacknowledged(self) -> int | None:
        """The bytes the kernel sent or holds that the client has not acknowledged (see
        :mod:`smtpcore.transport`), on the socket under every TLS layer; None where
        the kernel cannot say (a stream over no socket)."""
        if self._closed:
            return None
        return kernel_unacknowledged(_socket_of(self._stream))

    async def _held_first(self, data: bytes) -> bytes:
        """``data`` behind what waits to be written: the rest of a held write, once
        written, and what is held now."""
        done = self._rest_written
        if done is not None:
            await done.wait()
        failed = self._write_failed
        if failed is not None:
            raise ConnectionResetError(f"connection lost: {failed}")
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        return data

    async def send_all(self, data: bytes) -> None:
        if self._fd >= 0 and not self._closed:
            if self._writes is not None:
                data = await self._held_first(data)
            await self._send_plain(data)
            return
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(str(exc) or "connection lost") from exc

    async def receive_to_drop(self, max_bytes: int) -> bytes:
        """Read bytes only to drop them, as a server's linger does before its close:
        through TLS while it works; once trio's ``SSLStream`` is broken (a write cut off
        part-way), the raw bytes of the stream under it. Left unread, the client's
        pipelined commands would turn the close into a reset, and the client's
        kernel would drop every reply it had not read yet (RFC 1122 §4.2.2.13)."""
        ssl_stream = self._ssl
        if not self._tls_broken:
            try:
                return await self.receive_some(max_bytes)
            except ConnectionResetError:
                if ssl_stream is None or self._closed:
                    raise
                self._tls_broken = True  # the stream under it is tried next
        assert ssl_stream is not None
        try:
            return bytes(await ssl_stream.transport_stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(str(exc) or "connection lost") from exc

    async def _send_plain(self, data: bytes) -> None:
        """Write to the socket itself, as :meth:`_receive_plain` reads: write what the
        kernel takes, and wait for room only when it took nothing. (trio's stream
        tries again before each wait, and the driver has usually just tried.)

        Stops once the connection is closed, before the write and after each wait: a
        wait that room woke in the same batch as the close cannot be told by trio,
        and the descriptor's number may then be another connection's or file's."""
        fd = self._fd
        if fd < 0:  # closed while the caller waited (for a held write's rest, say)
            raise _closed_meanwhile()
        view = memoryview(data)
        sent = 0
        while sent < len(view):
            try:
                sent += os.write(fd, view[sent:])
                continue
            except BlockingIOError:
                pass
            try:
                await trio.lowlevel.wait_writable(fd)
            except trio.ClosedResourceError as exc:  # closed by another task meanwhile
                raise _closed_meanwhile() from exc
            if self._fd != fd:
                raise _closed_meanwhile()

    async def send_eof(self) -> None:
        """Shut down the sending side once everything written has gone (the held reply
        first), where the stream can: a ``trio.abc.HalfCloseableStream`` (a
        ``SocketStream``) with no TLS over it, or under a broken TLS layer, which
        writes no more records; else nothing."""
        if self._closed:
            raise ConnectionResetError("the connection is closed")
        stream = self._stream
        if self._ssl is not None:
            if not (self._tls_broken or await self._tls_found_broken()):
                return
            stream = self._ssl.transport_stream
        if not isinstance(stream, trio.abc.HalfCloseableStream):
            return
        if self._writes is not None and self._fd >= 0:
            held = await self._held_first(b"")
            if held:
                await self._send_plain(held)
        try:
            await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(str(exc) or "connection lost") from exc

    async def _tls_found_broken(self) -> bool:
        """Whether the ``trio.SSLStream`` is broken (see :attr:`_tls_broken`), asked with a
        write of nothing, which trio refuses on a broken stream and otherwise turns
        into a checkpoint that sends no record."""
        assert self._ssl is not None
        try:
            await self._ssl.send_all(b"")
        except trio.BrokenResourceError:
            self._tls_broken = True
        except trio.ClosedResourceError as exc:
            raise ConnectionResetError(str(exc) or "connection lost") from exc
        return self._tls_broken

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        # A SocketStream keeps no read buffer of its own: any plaintext sent
        # after STARTTLS is still in the kernel, and the TLS layer refuses it.
        # So does it what another stream had buffered.
        if self._ssl is not None:
            raise ConnectionResetError("TLS is already up on this stream")
        if self._writes is not None and self._fd >= 0:
            held = await self._held_first(b"")  # the reply that says go ahead, in clear
            if held:
                await self._send_plain(held)
        stream = trio.SSLStream(
            self._stream,
            context,
            server_side=server_side,
            server_hostname=server_hostname,
            https_compatible=True,  # SMTP frames its own end, so a bare TCP close is EOF
        )
        try:
            await _shake_hands(stream)
        except BaseException:
            # No way back to plaintext (RFC 3207 §4): the peer may be mid-handshake,
            # so a plain reply (a shutdown's 421) would land in its TLS records.
            # Reads and writes go to the stream whose handshake failed, which fails them
            # as a reset connection does; aclose still closes the socket.
            self._stream = _HandshakeFailed(stream)
            self._fd = -1
            raise
        self._ssl = stream
        self._stream = stream
        self._fd = -1

    closes_when_cancelled: ClassVar[bool] = True
    """:meth:`aclose` closes whether cancelled or not: a cancelled one drops the replies
    it still holds and closes the stream, shielded, within its own close timeout (see
    :mod:`smtpcore.transport`)."""

    async def aclose(self) -> None:
        """Send what held writes keep, then close the stream. Only the sending waits on
        the caller's cancellation: a server cancels the close of a session whose
        client did not take its last write in time, and waiting for room then would
        hold the session the whole close timeout for a client that does not read,
        where asyncio's transports abort. The stream's own close is shielded, so a
        cancelled close still closes."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._held is not None or self._rest_written is not None:
                await self._send_held_last()
        finally:
            self._held = None
            await self._close_stream()

    async def _send_held_last(self) -> None:
        """The last replies, held: sent before the close, as a write would have been,
        within the close timeout. What the kernel takes at once goes out even under a
        cancelled scope; the rest is dropped when the caller cancels the wait."""
        with trio.move_on_after(shared_transport.CLOSE_TIMEOUT), contextlib.suppress(OSError):
            await self._send_plain(await self._held_first(b""))

    async def _close_stream(self) -> None:
        """Close the stream, shielded, within the close timeout (TLS's close, say), then
        cut it off. Plain-TCP reads and writes are told first (``_fd`` is ``-1``), and
        each checks after every wait, before it touches the descriptor: one woken in
        the batch of the close (room came, or bytes) would not hear of it from trio,
        and the number may be another's by the time it runs (an accept's, a delivery's
        file's)."""
        self._fd = -1
        with trio.move_on_after(shared_transport.CLOSE_TIMEOUT) as scope:
            scope.shield = True
            try:
                await self._stream.aclose()
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await trio.aclose_forcefully(self._base)

    @property
    def peer_address(self) -> tuple[str, int] | None:
        base = self._base
        # An accepted TCP stream's socket, and an IPv4 address as address() would keep
        # it, without the calls: every connection asks.
        sock = base.socket if type(base) is trio.SocketStream else _socket_of(base)
        try:
            value = None if sock is None else sock.getpeername()
        except OSError:
            return None
        if type(value) is tuple and len(value) == 2:
            # One string for every session from the same IPv4 address, as on asyncio.
            return (shared_peer_host(value[0]), value[1])
        return address(value)

    @property
    def local_address(self) -> tuple[str, int] | None:
        base = self._base
        sock = base.socket if type(base) is trio.SocketStream else _socket_of(base)
        try:
            value = None if sock is None else sock.getsockname()
        except OSError:
            return None
        if type(value) is tuple and len(value) == 2:
            # The server's own few addresses: interned, as they are never many.
            return (intern(value[0]), value[1])
        return address(value)

    @property
    def tls(self) -> TLSInfo | None:
        return None if self._ssl is None else tls_info(self._ssl)

    async def _finish_handshake(self) -> None:
        """The given ``trio.SSLStream``'s handshake (trio makes it on the stream's first
        use), so that :attr:`tls` describes the session from its first byte; nothing
        for one whose handshake is done."""
        assert self._ssl is not None
        await _shake_hands(self._ssl)


class _HandshakeFailed(trio.abc.Stream):
    """What is left of a stream whose TLS handshake did not finish (it failed, or was
    cancelled): every read and write fails, as over a reset connection, and closing
    closes the stream under it. trio leaves such an ``SSLStream`` broken, but says
    it *may*; this says it for certain, and for every stream."""

    def __init__(self, stream: trio.SSLStream[trio.abc.Stream]) -> None:
        self._stream = stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        raise trio.BrokenResourceError("the TLS handshake did not finish")

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        raise trio.BrokenResourceError("the TLS handshake did not finish")

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _shake_hands(stream: trio.SSLStream[trio.abc.Stream]) -> None:
    """``stream``'s handshake, its failures an ``OSError`` as the transports' are."""
    try:
        await stream.do_handshake()
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError):
            raise cause from exc
        raise ConnectionResetError(str(exc) or "TLS handshake failed") from exc
