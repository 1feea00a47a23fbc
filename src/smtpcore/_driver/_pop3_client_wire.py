"""The POP3 client's wire: commands written, status lines and content read, one event at a time.

Every other part of :class:`~smtpcore._driver.BasePOP3Client` speaks through
these methods: :meth:`POP3ClientWire._send` checks a command with the machine
(after looking at what came unasked: a response no command asked for would be
paired with the wrong one) and traces it, :meth:`POP3ClientWire._write`
writes it under the send timeout, and :meth:`POP3ClientWire._event` reads the next
event under the response timeout, a status line bounded from its first byte.
Whatever breaks on the way closes the connection. Kept apart because it is the
one place that touches the transport and the trace, and the hottest code of a
message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Final

from smtpcore._driver._arrived import look_at_arrived
from smtpcore._driver._client_base import BaseClient
from smtpcore._driver._pop3_errors import POP3ConnectionError, POP3ProtocolError, POP3Timeout
from smtpcore._driver._timeouts import POP3Timeouts, rest_of_answer
from smtpcore._driver._trace import MASK, WireTrace
from smtpcore._driver._transport import Link
from smtpcore._errors import RemoteProtocolError
from smtpcore._sentinels import NEED_DATA, PAUSED
from smtpcore.pop3 import (
    Apop,
    Auth,
    AuthResponse,
    ClientConnection,
    Command,
    ConnectionClosed,
    Continue,
    Err,
    Event,
    Ok,
    Pass,
    State,
)
from smtpcore.pop3._responses import parse_status_line

__all__ = ["ContentLeft", "POP3ClientWire"]

_READ_SIZE: Final = 262144


_MAX_CLOSING_ERR: Final = 512
"""The longest line a server's closing ``-ERR`` is read from (RFC 2449 §4: 512 octets)."""


def _closing_err(came: bytes) -> Err | None:
    """The ``-ERR`` that ``came`` is, one whole line and nothing else: what a server
    says as it closes the session on its own (a shutdown's ``-ERR [SYS/TEMP]``, RFC
    2449 §8.1.2), no answer to a command; ``None`` for anything else."""
    if len(came) > _MAX_CLOSING_ERR or not came.endswith(b"\r\n") or came.count(b"\n") != 1:
        return None
    try:
        said = parse_status_line(came[:-2])
    except RemoteProtocolError:
        return None
    return said if isinstance(said, Err) else None


def _masked(event: Command | AuthResponse) -> str | None:
    """The line a trace shows for an event that carries a secret, else None."""
    if isinstance(event, Pass):
        return f"PASS {MASK}"
    if isinstance(event, Apop):
        return f"APOP {event.name} {MASK}"
    if isinstance(event, Auth) and event.initial_response is not None:
        return f"AUTH {event.mechanism} {MASK}"
    if isinstance(event, AuthResponse):
        return "*" if event.cancel else MASK
    return None


@dataclass(slots=True)
class ContentLeft:
    """The content of a multi-line answer still to read: how many more octets it may
    have (``None``: no bound), and what to say when it runs past them."""

    left: int | None
    overrun: str
    unbounded: bool = False
    """The caller chose no bound (``max_size=None``): the rest left unread, read and
    dropped before the next command, keeps none either, where content left without a
    bound of its own gets a default one there."""


class POP3ClientWire(BaseClient):
    """Commands out and events in, for the layers of a POP3 client session above it."""

    timeouts: POP3Timeouts
    _conn: ClientConnection | None
    _transport: Link | None
    _trace: WireTrace | None
    _unread: ContentLeft | None
    _peer_closed: bool
    _tls_just_started: bool
    _ended_states: ClassVar[frozenset[State]] = frozenset({State.CLOSED, State.ERROR})

    @property
    def connection(self) -> ClientConnection:
        """The machine of the open session."""
        if self._conn is None:
            raise POP3ConnectionError("not connected")
        return self._conn

    async def _send(self, *events: Command | AuthResponse) -> bytes:
        """The bytes of ``events``, checked by the machine, and traced; a session it
        finds ended is closed before the error goes on.

        A command sent while no answer is awaited first takes what the server
        sent since its last answer (:meth:`_take_unasked`). Any byte of it is a
        response no command asked for, which would be paired with this command
        and every later answer with the wrong one (a refused ``DELE`` read as
        done): the machine refuses to send, and the session is over, which the
        caller sees as :class:`POP3ProtocolError`. A session this client closed (an
        AUTH it could not take, say) is :class:`POP3ConnectionError` first, and so
        is one the machine ended (that response, a close found between commands):
        the machine would say only that no command may be sent in its state, where
        the caller must connect again.

        Either way nothing more can be said on the connection, and a server holds the
        maildrop's lock until its session ends (RFC 1939 §4): the connection is
        closed here, at once, rather than at ``close()`` or the next ``connect()``, as
        poplib's ``quit()`` closes it. A command the machine refuses for the caller's
        mistake (``LocalProtocolError``) leaves the session, and its connection, as
        they were. Async for that close alone: every command goes out through here."""
        try:
            conn = self.connection
            if self._transport is None:
                raise POP3ConnectionError("not connected")
            if conn.state in self._ended_states:
                raise POP3ConnectionError("the session has ended: connect() starts a new one")
            data = b""
            for event in events:  # a loop: a comprehension is one call more
                if isinstance(event, Command) and self._unread is None and not conn.outstanding:
                    await self._take_unasked()
                sent = conn.send(event)
                if self._trace is not None:
                    self._trace.sent(sent, shown=_masked(event))
                data += sent
        except RemoteProtocolError as exc:
            await self._abort()
            raise POP3ProtocolError(str(exc)) from exc
        except POP3ConnectionError:
            await self._abort()
            raise
        return data

    async def _take_unasked(self) -> None:
        """Hand the machine what has already arrived from the server, without waiting;
        :class:`POP3ConnectionError` if the server has closed the connection (the
        machine's ``RemoteProtocolError`` if bytes came before the close). Reading
        stops once the machine holds more than its ``max_buffered`` (any byte is one
        too many already): a server that keeps the socket full cannot grow memory.

        What has reached the socket that such a read cannot give (the transport's
        ``arrived``: bytes an event loop the application blocked between two calls
        has yet to read, a TLS record on trio) is looked at too, briefly
        (:func:`~smtpcore._driver._arrived.look_at_arrived`): a response there, left
        for the next command's read, would pass for its answer. Not before the
        first command after a handshake: the server's TLS 1.3 session tickets
        arrive then, records with no response in them and nothing behind them
        until that command (every connect would wait out the look's bound); its
        answer, read after them, takes them."""
        transport = self._transport
        came = b""  # what arrived unasked, kept while it may be one -ERR line
        # A stand-in for a Link (a wrapper that shows the wire) may have neither.
        receive_nowait = getattr(transport, "receive_nowait", None)
        while receive_nowait is not None and (data := receive_nowait(_READ_SIZE)) is not None:
            came = self._unasked(data, came)
            if self.connection.buffered > self.connection.max_buffered:
                return
        if self._tls_just_started or transport is None:
            self._tls_just_started = False
            return
        data = await look_at_arrived(transport, _READ_SIZE)
        if data is not None:
            self._unasked(data, came)

    def _unasked(self, data: bytes, came: bytes) -> bytes:
        """Hand the machine ``data``, which came while no answer was due, and return
        what came so far (``came`` before it); raise for the server's close."""
        conn = self.connection
        if self._trace is not None:
            self._trace.received(data)
        conn.receive_data(data)
        if not data:
            self._peer_closed = True
            try:
                conn.next_event()  # the machine closes the session, or refuses what came
            except RemoteProtocolError as exc:
                said = _closing_err(came)
                if said is None:
                    raise
                raise POP3ConnectionError("the server is closing the session", said) from exc
            raise POP3ConnectionError("the server closed the connection")
        return came + data if len(came) <= _MAX_CLOSING_ERR else came

    async def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            raise POP3ConnectionError("not connected")
        try:
            async with transport.deadline(self.timeouts.send):
                await transport.send_all(data)
        except TimeoutError as exc:
            self.connection.send_failed()
            await self._abort()
            raise POP3Timeout("the server stopped reading") from exc
        except OSError as exc:
            self.connection.send_failed()
            await self._abort()
            raise POP3ConnectionError(f"connection lost: {exc}") from exc
        except BaseException:  # cancelled half-way: the session cannot go on
            self.connection.send_failed()
            await self._abort()
            raise

    async def _status(
        self, timeout: float | None, *, until: float | None = None
    ) -> Ok | Err | Continue:
        event = await self._event(timeout, line=True, until=until)
        if not isinstance(event, (Ok, Err, Continue)):
            raise POP3ProtocolError(f"expected a status line, got {event!r}")
        return event

    async def _event(
        self, timeout: float | None, *, line: bool = False, until: float | None = None
    ) -> Event:
        """The next event, reading as needed under ``timeout``; ``line``: a status
        line, which must also end within ``timeout`` of its first bytes; ``until``: a
        :func:`time.monotonic` time it must come by (:meth:`_drain`'s).

        Whatever stops it (a lost connection, a timeout, a broken answer,
        cancellation) leaves the session where nobody can say, so the
        connection is closed before the error goes on.
        """
        try:
            return await self._read_event(timeout, line, until)
        except BaseException:
            await self._abort()
            raise

    async def _read_event(self, timeout: float | None, line: bool, until: float | None) -> Event:
        """The next event. ``timeout`` bounds each read; for a status line (``line``)
        it also bounds the wait for the line's end from its first bytes, so that a
        server dripping an octet at a time cannot hold the session for hours.
        Content keeps a timeout per read: a large message over a slow link may
        rightly take longer than any one wait."""
        conn = self.connection
        transport = self._transport
        if transport is None:
            raise POP3ConnectionError("not connected")
        read = False
        begun: float | None = None
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                if self._peer_closed:  # gone in the middle of an answer
                    raise POP3ConnectionError(f"the server closed the connection: {exc}") from exc
                raise POP3ProtocolError(str(exc)) from exc
            if event is NEED_DATA:
                wait = timeout
                if line and read and timeout is not None:  # the rest of a line begun
                    begun, wait = rest_of_answer(timeout, begun)
                    if wait <= 0:
                        raise self._timed_out(_UNENDED.format(timeout), line)
                late = False  # whether ``until`` is the nearer end of the wait
                if until is not None:
                    left = until - time.monotonic()
                    if left <= 0:
                        raise self._timed_out(_UNDRAINED.format(self.timeouts.response), line)
                    if wait is None or left < wait:
                        wait, late = left, True
                try:
                    async with transport.deadline(wait):
                        data = await transport.receive_some(_READ_SIZE)
                except TimeoutError as exc:
                    if late:
                        undrained = _UNDRAINED.format(self.timeouts.response)
                        raise self._timed_out(undrained, line) from exc
                    if begun is not None:
                        raise self._timed_out(_UNENDED.format(timeout), line) from exc
                    raise self._timed_out(f"no answer within {timeout} s", line) from exc
                except OSError:
                    data = b""
                read = True
                self._peer_closed = not data
                if self._trace is not None:
                    self._trace.received(data)
                conn.receive_data(data)
                continue
            if event is PAUSED:
                raise POP3ProtocolError("no answer is awaited")
            if isinstance(event, ConnectionClosed):
                raise POP3ConnectionError("the server closed the connection")
            assert isinstance(event, Event)
            return event

    def _timed_out(self, message: str, line: bool) -> POP3Timeout:
        """The timeout ``message``, naming the likely cause when a multi-line answer
        (not a status ``line``) never ended and what it received last is a line "."
        ended by a bare LF: that server's end of an answer, which is content here."""
        if not line and self.connection.bare_lf_dot_line:
            message = f"{message}: {_BARE_LF_HINT}"
        return POP3Timeout(message)


_UNENDED: Final = "the status line did not end within {} s of its start"

_UNDRAINED: Final = "the rest of a multi-line answer did not end within {} s"

_BARE_LF_HINT: Final = (
    'the server sent a line "." ended by a bare LF; RFC 1939 requires CRLF, '
    "and only CRLF.CRLF ends a multi-line answer: its LF.LF is content here"
)
