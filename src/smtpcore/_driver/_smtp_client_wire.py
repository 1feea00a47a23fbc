"""The SMTP client's wire: commands written, replies read, one at a time or in an exchange.

Every other part of :class:`~smtpcore._driver.BaseSMTPClient` speaks through
these methods: :meth:`SMTPClientWire._write` checks events with the machine and
writes them, :meth:`SMTPClientWire._reply` reads the next reply under its
timeout, :meth:`SMTPClientWire._exchange` does both for a client that sends a
command at a time, and what came unasked is looked at before each command
(RFC 5321 §3.8). A failure while a reply is awaited is named here too
(:meth:`SMTPClientWire._unanswered`): the end of a message's content unanswered
may have delivered it (RFC 5321 §6.1). Kept apart because it is the one place
that touches the transport and the trace, and the hottest code of a message.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import ClassVar, Final

from smtpcore._driver._arrived import look_at_arrived
from smtpcore._driver._client_base import BaseClient
from smtpcore._driver._smtp_errors import (
    SMTPConnectionError,
    SMTPError,
    SMTPProtocolError,
    SMTPTimeout,
)
from smtpcore._driver._smtp_unanswered import end_unanswered
from smtpcore._driver._timeouts import Timeouts, rest_of_answer
from smtpcore._driver._trace import MASK, WireTrace
from smtpcore._driver._transport import Link
from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._sentinels import NEED_DATA, PAUSED, NoEvent
from smtpcore.smtp import (
    Auth,
    AuthResponse,
    Bdat,
    ClientConnection,
    Command,
    ConnectionClosed,
    EndOfMessage,
    Event,
    RecipientResult,
    Reply,
    TransactionResult,
)
from smtpcore.smtp._state import State

__all__ = ["CHUNK", "SMTPClientWire"]

CHUNK: Final = 65536
"""Octets a read asks for, and the default ``chunk_size`` of content."""

_UNENDED: Final = "the reply did not end within {} s of its start"

_LEFT_BEHIND_WAIT: Final = 1.0
"""Seconds a write the server's close cut short waits for the reply sent before it."""

_LEFT_BEHIND_READS: Final = 64
"""Reads that wait may make: a reply or two of a few lines (each bounded by the machine)."""


def _masked(event: Event) -> str | None:
    """The line a trace shows for an event that carries a secret, else None: the
    AUTH initial response and every answer to a 334 (RFC 4954 §4)."""
    if isinstance(event, Auth) and event.initial_response is not None:
        return f"AUTH {event.mechanism} {MASK}"
    if isinstance(event, AuthResponse):
        return "*" if event.cancel else MASK
    return None


class SMTPClientWire(BaseClient):
    """Commands out and replies in, for the layers of an SMTP client session above it."""

    timeouts: Timeouts
    _conn: ClientConnection | None
    _trace: WireTrace | None
    _exchanging: Link | None
    _tls_just_started: bool
    _ended_states: ClassVar[frozenset[State]] = frozenset({State.CLOSED, State.ERROR})

    @property
    def connection(self) -> ClientConnection:
        """The machine of the open session."""
        if self._conn is None:
            raise SMTPConnectionError("not connected")
        return self._conn

    def _ask(
        self,
        conn: ClientConnection,
        transport: Link,
        command: Command,
        timeout: float | None,
        *,
        first: bool = False,
    ) -> Awaitable[Reply]:
        """Send ``command`` once the reply before it has been read, and read its reply
        (:meth:`_exchange`). Bytes that came behind that reply, in the machine or
        the transport, are looked at first (:meth:`_ask_after_unasked`): a reply
        no command asked for (a ``421``, say) ends the session there rather than
        pass for this one's. A plain function: most often the caller awaits
        ``_exchange`` itself, a coroutine fewer to make and to resume.

        ``first``: the first command of a message, which may come after the session
        sat idle (the caller's pause between two calls, an event loop it blocked),
        when a reply no command asked for may have come after the last read: the
        socket itself is asked (the link's ``settled`` in place of ``drained``, one
        call as it is), and what it holds is looked at too (``look``). Between a
        message's own commands the replies follow each other at once: the last
        read's ``drained`` is asked, and nothing more is looked at."""
        if conn._received or not (transport.settled() if first else transport.drained()):
            return self._ask_after_unasked(conn, transport, command, timeout, look=first)
        return self._exchange(conn, transport, conn.send(command), timeout, timeout)

    async def _ask_after_unasked(
        self,
        conn: ClientConnection,
        transport: Link,
        command: Command,
        timeout: float | None,
        *,
        look: bool,
    ) -> Reply:
        """:meth:`_ask` where bytes may have come unasked: looked at (the socket too
        where ``look``), then the exchange."""
        await self._take_unasked(idle=True, look=look)
        return await self._exchange(conn, transport, conn.send(command), timeout, timeout)

    async def _unasked_held(self) -> None:
        """Raise for a reply (or the server's close) the machine holds while no reply
        is due; nothing when it holds none."""
        conn = self._conn
        assert conn is not None
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            raise self._garbled(exc) from exc
        if event is not PAUSED:
            await self._unasked(event)

    def _exchanges(self) -> bool:
        """Whether a command and its reply can go through :meth:`_exchange`: no trace
        to show them, and a transport that writes without waiting and reads under a
        deadline (a stand-in for a Link, a wrapper that shows the wire, may not).
        Asked once a connection: the answer is kept in ``_exchanging``."""
        transport = self._transport
        if transport is not None and transport is self._exchanging:
            return True
        if (
            self._trace is None
            and getattr(transport, "send_nowait", None) is not None
            and getattr(transport, "receive_within", None) is not None
            and getattr(transport, "drained", None) is not None
        ):
            self._exchanging = transport
            return True
        return False

    async def _exchange(
        self,
        conn: ClientConnection,
        transport: Link,
        data: bytes,
        sending: float | None,
        replying: float | None,
    ) -> Reply:
        """Write ``data`` (the machine's bytes for one command, or for the content and
        its end) and read the one reply due, in one coroutine: what :meth:`_write` and
        :meth:`_reply` do for a client that sends a command at a time. The machine
        holds no reply byte (its ``send`` refused to go out behind one), so the reply
        is read at once; ``sending`` bounds a write the transport did not take whole,
        ``replying`` the read. Only for a link :meth:`_exchanges` accepts: the
        session's own machine and link, which the caller has in hand."""
        try:
            sent = transport.send_nowait(data)
        except OSError as exc:
            raise await self._lost_in_writing(exc) from exc
        if sent < len(data):
            await self._write(sending, before=data[sent:] if sent else data)
        try:
            received = await transport.receive_within(replying, CHUNK)
        except TimeoutError as exc:
            raise self._unanswered(SMTPTimeout(f"no reply within {replying} s")) from exc
        except OSError:
            received = b""
        try:
            event = conn._receive_event(received)
        except RemoteProtocolError as exc:
            raise self._garbled(exc) from exc
        if type(event) is Reply and event.code != 421:
            return event
        # more to read, a 421, the close
        return await self._reply(replying, event, in_pieces=event is NEED_DATA)

    def _send(self, *events: Event) -> bytes:
        """The bytes of ``events``, checked by the machine, and traced."""
        conn = self._conn
        if conn is None:
            raise SMTPConnectionError("not connected")
        trace = self._trace
        if trace is None:
            data = b""
            for event in events:  # a loop: a comprehension is one call more
                data += conn.send(event)
            return data
        chunks = []
        for event in events:
            data = conn.send(event)
            trace.sent(data, shown=_masked(event))
            chunks.append(data)
        if type(events[0]) is Bdat:
            trace.chunk_ended()
        return b"".join(chunks)

    async def _command(
        self,
        command: Command | AuthResponse,
        timeout: float | None,
    ) -> Reply:
        """A command that stands alone (EHLO, STARTTLS, AUTH, NOOP, RSET, VRFY, QUIT:
        none on a message's hot path) and its reply, after a look at what came unasked
        in the socket too (:meth:`_take_unasked` with ``look``)."""
        await self._take_unasked(look=True)
        await self._write(timeout, command)
        return await self._reply(timeout)

    async def _take_unasked(self, *, idle: bool = False, look: bool = False) -> None:
        """Read what the server sent while no reply was due, before the next command.

        A reply nobody asked for would be paired with the next command and every
        later reply with the wrong one (a refused recipient read as accepted): the
        machine turns it into an error here, and a ``421`` into the end of the
        session (RFC 5321 §3.8). Nothing is read while replies are due, unless the
        caller knows none is (``idle``: it has just read the last one). Reading stops
        once the machine holds more than its ``max_buffered``, more than any reply
        can be: a server that keeps the socket full cannot grow memory here.
        ``look``: what has reached the socket that such a read cannot give is looked
        at too (:meth:`_look_at_arrived`).
        """
        conn = self._conn
        transport = self._transport
        if conn is None or transport is None:
            raise SMTPConnectionError("not connected")
        if not idle and conn._queue and conn.pending:  # the property only when awaiting
            return
        # A stand-in for a Link (a wrapper that shows the wire) may not have it.
        receive_nowait = getattr(transport, "receive_nowait", None)
        while receive_nowait is not None and (data := receive_nowait(CHUNK)) is not None:
            if self._trace is not None:
                self._trace.received(data)
            conn.receive_data(data)
            if not data or conn.buffered > conn.max_buffered:
                break
        await self._unasked_held()
        if look:
            await self._look_at_arrived()

    async def _look_at_arrived(self) -> None:
        """Raise for a reply in what has reached the socket that a read that never
        waits cannot give (the transport's ``arrived``: bytes an event loop the
        application blocked between two calls has yet to read, a TLS record on
        trio), read for a moment (:func:`~smtpcore._driver._arrived.look_at_arrived`):
        no reply is due, so any is one no command asked for (:meth:`_unasked`; the
        server's close too). Not right after a STARTTLS handshake: the server's TLS
        1.3 session tickets arrive then, records with no reply in them and nothing
        behind them until the client speaks, and the look would wait out its whole
        bound before EHLO; EHLO's reply, read after them, takes them."""
        if self._tls_just_started:
            self._tls_just_started = False
            return
        conn = self._conn
        transport = self._transport
        if conn is None or transport is None:
            raise SMTPConnectionError("not connected")
        data = await look_at_arrived(transport, CHUNK)
        if data is None:
            return
        if self._trace is not None:
            self._trace.received(data)
        try:
            event = conn._receive_event(data)
        except RemoteProtocolError as exc:
            raise self._garbled(exc) from exc
        await self._unasked(event)

    async def _unasked(self, event: Reply | ConnectionClosed | NoEvent) -> None:
        """Raise for ``event``, what the machine gave while no reply was due: a
        reply, or the server's close (``NEED_DATA``: part of one, read to its end)."""
        if event is NEED_DATA:  # part of a reply, maybe a 421: read the rest
            event = await self._reply(self.timeouts.command)
        if isinstance(event, Reply):
            raise SMTPConnectionError("the server is closing the session", event)
        if isinstance(event, ConnectionClosed):
            raise SMTPConnectionError("the server closed the connection")

    async def _write(self, timeout: float | None, *events: Event, before: bytes = b"") -> None:
        """Write ``before`` and the bytes of ``events`` (checked by the machine first,
        and traced: see :meth:`_send`): what the transport takes at once without a
        deadline (the usual case: a few commands, a small message), the rest under
        ``timeout``."""
        conn = self._conn
        transport = self._transport
        if conn is None or transport is None:
            raise SMTPConnectionError("not connected")
        try:
            if self._trace is None:
                data = before
                for event in events:  # _send's loop, without a call more a write
                    data += conn.send(event)
            else:
                data = before + self._send(*events)
        except RemoteProtocolError as exc:  # bytes no command asked for, held
            raise self._garbled(exc) from exc
        except LocalProtocolError:
            if conn._received and not conn._queue:  # a reply held, maybe a 421: read it
                await self._unasked_held()
            raise
        # A stand-in for a Link (a wrapper that shows the wire) may not have it.
        send_nowait = getattr(transport, "send_nowait", None)
        try:
            sent = 0 if send_nowait is None else send_nowait(data)
            if sent < len(data):
                async with transport.deadline(timeout):
                    await transport.send_all(data[sent:] if sent else data)
        except TimeoutError as exc:
            self._send_failed()
            raise SMTPTimeout("the server stopped reading") from exc
        except OSError as exc:
            raise await self._lost_in_writing(exc) from exc

    def _send_failed(self) -> None:
        if self._conn is not None:
            self._conn.send_failed()

    async def _lost_in_writing(self, exc: OSError) -> SMTPConnectionError:
        """The error for a write the server's close cut short. The machine is told
        first that the bytes never went out, so that no reply can answer them; then a
        ``421`` the server sent before closing (:meth:`_replies_left_behind`) is raised
        as a ``421`` is anywhere else (RFC 5321 §3.8), as Exim's "SMTP error from
        remote mail server after ..." shows it. Any other reply answers content that
        did not all go out: it is only quoted, and the loss stays temporary."""
        self._send_failed()
        replies = await self._replies_left_behind()
        for reply in replies:
            if reply.code == 421:
                return SMTPConnectionError("the server is closing the session", reply)
        said = "".join(f"; the server had said {reply}" for reply in replies)
        return SMTPConnectionError(f"connection lost: {exc}{said}")

    async def _replies_left_behind(self) -> list[Reply]:
        """The whole replies the server sent before closing, once a write has found it
        gone: what the machine held unread and what arrives within
        :data:`_LEFT_BEHIND_WAIT` seconds (never the reply timeout: the server is
        gone), read by the machine's ``replies_left_behind``, which takes none of them
        as an answer to what it sent."""
        conn = self._conn
        transport = self._transport
        if conn is None or transport is None:
            return []
        replies = conn.replies_left_behind()
        try:
            async with transport.deadline(_LEFT_BEHIND_WAIT):
                for _ in range(_LEFT_BEHIND_READS):
                    if not conn.more_left_behind:
                        break
                    data = await transport.receive_some(CHUNK)
                    if self._trace is not None:
                        self._trace.received(data)
                    if not data:  # the server's close
                        break
                    replies += conn.replies_left_behind(data)
        except (TimeoutError, OSError):
            pass
        return replies

    def _unanswered(self, error: SMTPError) -> SMTPError:
        """``error``, a timeout, a lost connection or a garbled reply (:meth:`_garbled`)
        while a reply was awaited, naming the end of a message's content when that was
        what the reply was to answer: the final dot (``"DATA"``) or ``BDAT ... LAST``
        (``"BDAT"``), with the transaction in ``result``. The server may have taken the
        message then (RFC 5321 §6.1, RFC 1047; §4.5.3.2.6 gives that wait its own
        timeout): the caller must be able to tell it from a failure before the end
        (:attr:`SMTPError.may_have_been_delivered`). Every read of a reply fails through
        here; the machine's oldest awaited event says what the reply was for. A
        transaction with no recipient accepted and left unanswered (every ``RCPT``
        refused, pipelined behind a ``DATA`` that got its 354) delivered nothing to
        anyone: the error then names no command."""
        awaited = self._awaited_end()
        if awaited is not None:
            error.command, error.result = awaited
        return error

    @property
    def unanswered_end(self) -> tuple[RecipientResult, ...]:
        """The recipients that the end of a message's content (the final dot, ``BDAT
        ... LAST``), sent with its reply not come, may have delivered to: those whose
        fate a session ended now (the connection lost, a timeout, the task cancelled)
        leaves unknown (RFC 5321 §6.1). Those accepted with no reply after the content,
        and those whose ``RCPT`` went with that end unanswered. Empty at any other
        moment, and when not connected."""
        return () if self._conn is None else tuple(end_unanswered(self._conn))

    def _awaited_end(self) -> tuple[str, TransactionResult] | None:
        """The command whose reply is awaited (``"DATA"`` or ``"BDAT"``) and its
        transaction, when that reply answers the end of a message's content and a
        recipient accepted awaits it (:attr:`unanswered_end`); the machine's oldest
        awaited event says what the reply is for."""
        conn = self._conn
        pending = () if conn is None else conn.pending
        ended = pending[0] if pending else None
        if type(ended) is EndOfMessage or (type(ended) is Bdat and ended.last):
            assert conn is not None  # it had a pending event
            transaction = conn.transaction
            if transaction is not None and end_unanswered(conn):
                return ("DATA" if type(ended) is EndOfMessage else "BDAT"), transaction
        return None

    def _garbled(self, exc: RemoteProtocolError) -> SMTPError:
        """The server's breach of the protocol (a reply no client can read, bytes no
        command asked for) as :class:`SMTPProtocolError`, through :meth:`_unanswered`:
        a garbled reply to the end of a message's content leaves its fate as unknown
        as a lost one (RFC 5321 §6.1), and the caller must hear so alike."""
        return self._unanswered(SMTPProtocolError(str(exc)))

    async def _reply(
        self,
        timeout: float | None,
        taken: Reply | ConnectionClosed | NoEvent | None = None,
        *,
        in_pieces: bool = False,
    ) -> Reply:
        """The next reply, reading as needed under ``timeout``. ``taken``: what the
        machine's ``next_event()`` gave already (``NEED_DATA`` where it holds no byte
        from the server: the reply is read first); ``in_pieces``: a read of this
        reply came already and did not end it.

        ``timeout`` bounds the wait for a reply's first bytes, and again the wait for
        its end from there (RFC 5321 §4.5.3.2 times replies, not reads): a server
        that drips a byte at a time cannot hold the session for hours."""
        conn = self._conn
        transport = self._transport
        if conn is None or transport is None:
            raise SMTPConnectionError("not connected")
        begun: float | None = None
        while True:
            if taken is None:
                try:
                    event = conn.next_event()
                except RemoteProtocolError as exc:
                    raise self._garbled(exc) from exc
            else:
                event, taken = taken, None
            if isinstance(event, Reply):
                if event.code == 421:
                    raise SMTPConnectionError("the server is closing the session", event)
                return event
            if isinstance(event, ConnectionClosed):
                raise self._unanswered(SMTPConnectionError("the server closed the connection"))
            if event is PAUSED:
                raise SMTPProtocolError("no reply is awaited")
            assert event is NEED_DATA
            wait = timeout
            if in_pieces and timeout is not None:  # the rest of a reply begun
                begun, wait = rest_of_answer(timeout, begun)
                if wait <= 0:
                    raise self._unanswered(SMTPTimeout(_UNENDED.format(timeout)))
            # A stand-in for a Link (a wrapper that shows the wire) may not have it.
            receive_within = getattr(transport, "receive_within", None)
            try:
                if receive_within is not None:
                    data = await receive_within(wait, CHUNK)
                else:
                    async with transport.deadline(wait):
                        data = await transport.receive_some(CHUNK)
            except TimeoutError as exc:
                if begun is not None:
                    raise self._unanswered(SMTPTimeout(_UNENDED.format(timeout))) from exc
                raise self._unanswered(SMTPTimeout(f"no reply within {timeout} s")) from exc
            except OSError:
                data = b""
            in_pieces = True
            if self._trace is not None:
                self._trace.received(data)
            try:
                taken = conn._receive_event(data)
            except RemoteProtocolError as exc:
                raise self._garbled(exc) from exc
