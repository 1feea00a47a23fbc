"""The one SMTP server session loop, shared by the asyncio and trio adapters.

:class:`ServerSession` drives a :class:`~smtpcore.smtp.ServerConnection` over
a :class:`~smtpcore._driver.Transport` and asks a
:class:`~smtpcore.handler.Handler` what to answer. At heart it is h11's
loop: take events until ``NEED_DATA``, answer each, write the replies in one
piece, read more. Replies to pipelined commands are written together, once
the commands already received are answered (RFC 2920 §3.1).

The session is put together from parts with one job each, every one a base
class of :class:`ServerSession` (a method costs the same wherever in them it is
defined: the type's attribute cache finds it in one step): its replies
(:mod:`~smtpcore._driver._smtp_server_replies`), the reject log
(:mod:`~smtpcore._driver._smtp_server_refusals`), the handler's hooks
(:mod:`~smtpcore._driver._smtp_server_hooks`), the mail transaction
(:mod:`~smtpcore._driver._smtp_server_transaction`), the message
(:mod:`~smtpcore._driver._smtp_server_content`), AUTH
(:mod:`~smtpcore._driver._smtp_server_auth`), XCLIENT
(:mod:`~smtpcore._driver._smtp_server_xclient`), the other commands
(:mod:`~smtpcore._driver._smtp_server_commands`) and the session's end
(:mod:`~smtpcore._driver._smtp_server_close`). Here is what runs them: the
loop, the greeting, and which part answers each event.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final

from smtpcore._driver._connection_lost import ConnectionLost
from smtpcore._driver._logtext import describe_error
from smtpcore._driver._session_registry import session_address
from smtpcore._driver._smtp_server_auth import NO_AUTH
from smtpcore._driver._smtp_server_commands import Commands
from smtpcore._driver._smtp_server_content import ContentDelivery
from smtpcore._driver._smtp_server_transaction import IDLE_STATES
from smtpcore._driver._smtp_server_xclient import Forwarding
from smtpcore._driver._transport import Link
from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._sentinels import NEED_DATA, PAUSED
from smtpcore.handler import Session
from smtpcore.smtp import (
    Auth,
    AuthResponse,
    BadCommand,
    Bdat,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    RejectedMessage,
    Reply,
    Rset,
    StartTls,
    State,
    Vrfy,
    Xclient,
    Xforward,
)

if TYPE_CHECKING:
    from smtpcore._driver._smtp_server import ServerState


logger = logging.getLogger("smtpcore.server")


READ_SIZE: Final = 65536
"""Bytes asked of the transport per read: big enough for a pipelined batch, small
enough that unstuffing a chunk stays in the CPU cache."""


_DATA_STATE: Final = State.DATA
"""A global: a member read through its enum class costs the class's __getattr__ hook."""


class ServerSession(Commands, ContentDelivery, Forwarding):
    """One connection, from greeting to close.

    Its fields are slots, as an idle session keeps them for minutes (the
    handler is read from :attr:`state`, not kept again): :class:`SessionReplies
    <smtpcore._driver._smtp_server_replies.SessionReplies>`, the base every part
    shares, holds them.
    """

    __slots__ = ()

    logger = logger
    protocol = "SMTP"

    def __init__(self, transport: Link, state: ServerState, peer: tuple[str, int] | None) -> None:
        # ServedSession's fields are set here, as in the POP3 session's constructor
        # (_pop3_server_session.POP3ServerSession.__init__): a base constructor costs
        # a call a connection.
        self.transport = transport
        self.state = state
        self.options = options = state.options
        local = transport.local_address
        if local is not None and local[0][:7] == "::ffff:":  # session_address, inline:
            local = session_address(local)  # a call less for every connection
        self.session = Session(hostname=options.hostname, peer=peer, local=local)
        self._out: list[bytes] | None = None
        """The replies due, in the order answered; None when none is (an idle session
        keeps no list)."""
        self._content_wait = False
        """Whether the wait under way is for message content."""
        self._in_chunk = False
        """Whether the octets of a BDAT chunk are being read."""
        self._last_read = 0
        self._waiting_idle = False
        self._write_cut = False
        self._write_unfinished = False
        self._waited_idle = False
        """Whether the last wait for the client was between transactions."""
        self._content_failure: Reply | None = None
        """What a message whose content the handler failed to take is answered
        (:func:`~smtpcore._driver._failures.failure_reply`); None while it takes it."""
        self._connect_told = False
        """Whether the handler was told of the session (see :meth:`_after_close`)."""
        self._auth = NO_AUTH
        # With a connection_factory, the machine is the factory's, taken as the
        # session starts (_machine_from_factory): none is built here.
        if options.connection_factory is None:
            self.conn = options.new_connection()
            if options.auth_mechanisms:
                self._offer_auth(self.conn.auth_mechanisms)

    async def _open(self) -> None:
        served = self.options.connection_factory is None or self._machine_from_factory()
        # _known_client, its coroutine spared where no proxy is trusted: every
        # connection opens here.
        if self.state.proxy_networks:
            client = await self._client_from_proxy(self.options.timeouts.command)
        else:
            client = self.session.peer
        # tls and trusted_forwarder are the session's, set on whatever machine runs it.
        if self.options.forwarder_networks:
            self._trust_forwarder(client)
        else:
            self.conn.trusted_forwarder = False
        if self.options.tls_on_connect:
            await self._handshake()
        elif self.session.tls is None:
            finishing = self.tls_from_the_start(self.options.timeouts.tls_handshake)
            if finishing is not None:
                await finishing
            self.session.tls = self.transport.tls
        # However it came (a proxy that terminated the client's TLS: _client_from_proxy),
        # the session's TLS is what the machine's gates read, as the POP3 session's is.
        self.conn.tls = self.options.tls_on_connect or self.session.tls is not None
        unavailable = self.state.unavailable
        if not served:
            greeting = unavailable
        else:
            self._connect_told = True
            greeting = (
                self.session.hostname is self.options.hostname  # see ServerState.unasked
                and self.state.unasked.get("handle_connect")
            ) or await self._ask(
                "handle_connect",
                (self.session,),
                self.options.timeouts.greeting,
                failed=unavailable,
            )
        if self.state.stopping:
            greeting = Reply(421, f"{self.options.hostname} Service shutting down", "4.3.2")
        self._answer(greeting, unavailable)

    def _machine_from_factory(self) -> bool:
        """Take the session's machine from the ``connection_factory``, checked against
        the server (:meth:`ServerOptions.check_connection`). False when the factory
        fails, its machine would go without the server's guards, or it runs another
        session (:class:`~smtpcore._driver._factory.MachinesInUse`): logged, and the
        session is refused with a ``421`` greeting on the server's own machine, built
        for that alone, as when ``handle_connect`` fails (RFC 5321 §3.1; no enhanced
        code before EHLO, RFC 2034)."""
        options = self.options
        assert options.connection_factory is not None
        running = self.state.factory_machines
        try:
            conn = options.connection_factory(options)
            running.check_free(conn)
            conn = options.check_connection(conn)
        except BaseException as exc:
            self.conn = options.new_connection()  # the refusal's, whatever ends the session
            if not self._call_failed(exc):
                raise
            logger.error("the session is refused: %s", describe_error(exc), exc_info=exc)
            return False
        running.take(conn)  # given back by _ended
        self.conn = conn
        if options.auth_mechanisms:
            self._offer_auth(options._machine_config.auth_mechanisms)
        return True

    async def run(self) -> None:
        """Serve the connection to its end; never raises but for cancellation (see
        :class:`~smtpcore._driver._served_session.ServedSession`).

        At heart h11's loop: answer the client's events until the session ends
        (a closed machine gives ``ConnectionClosed``), written out here rather
        than in a coroutine of its own, so that a session waiting for its
        client is suspended in this one frame.
        """
        self.state.sessions.setdefault(self)  # as admitted, or under no address
        watching = None  # the watchdog's block, once entered (see ServedSession.run)
        try:
            await self._open()
            block = self.transport.watchdog()
            self._watchdog = await block.__aenter__()
            watching = block
            conn = self.conn
            new_wait = True  # the next read starts a wait for a new command
            while True:
                try:
                    event = conn.next_event()
                except RemoteProtocolError as exc:
                    if isinstance(exc.reply_hint, Reply):
                        self._out = [*(self._out or ()), conn.send(exc.reply_hint)]
                    break
                except LocalProtocolError as exc:
                    # An extension entry of the application's own failed on a command
                    # (see ServerConnection.next_event): its mistake, logged and
                    # answered as a failing hook's, and the session goes on.
                    if not isinstance(exc.reply_hint, Reply):
                        raise
                    logger.exception("extension entry: %s", exc)
                    self._answer(exc.reply_hint)
                    new_wait = True
                    continue
                if event is NEED_DATA:
                    # The wait itself is written out here, not in a method: a
                    # suspended session's stack is one frame shorter, and every
                    # read one call less.
                    if self._start_wait(new_wait):
                        try:
                            out = self._out
                            if out is not None:
                                # The replies due, as _write_out writes them,
                                # without its two calls when the kernel takes
                                # them at once: every read.
                                self._out = None
                                due = out[0] if len(out) == 1 else b"".join(out)
                                out = None  # a waiting session keeps no list
                                try:
                                    # What the kernel did not take (a slice of
                                    # all of it is the same bytes, of none b"").
                                    due = due[self.transport.send_nowait(due) :]
                                except OSError:
                                    conn.send_failed()
                                    raise ConnectionLost from None
                                if due:
                                    self._out = [due]
                                    await self._write_out()
                                del due  # nor the replies written
                            # The bytes, or a wait for them: no coroutine of
                            # the transport's stays suspended (see
                            # Link.receive_or_wait).
                            got = self.transport.receive_or_wait(READ_SIZE)
                            data = got if isinstance(got, bytes) else await got
                            while data is None:  # the wait is over: read again
                                if isinstance(got, CoroutineType):  # not a wait: a read
                                    raise TypeError("the transport's receive_some gave None")
                                got = self.transport.receive_or_wait(READ_SIZE)
                                data = got if isinstance(got, bytes) else await got
                        except OSError:
                            data = got = b""
                        finally:
                            self._waiting_idle = False
                            self._watchdog.disarm()
                        self._last_read = len(data)
                        conn.receive_data(data)
                        # The machine's now: a waiting session must not keep it.
                        del data, got
                    new_wait = False
                elif (answer := _ANSWERS.get(type(event))) is not None:  # an event
                    new_wait = True
                    answering = answer(self, event)
                    if answering is not None:  # a handler's hook, say
                        await answering
                        answering = None  # a waiting session keeps no coroutine
                elif event is PAUSED:
                    # Every event is answered at once, but for a BDAT chunk: the
                    # machine pauses once its octets are in (RFC 3030 §2).
                    if not isinstance(conn.pending, Bdat):  # pragma: no cover
                        raise RuntimeError(f"machine paused in {conn.state}")
                    new_wait = True
                    await self._chunk_received(conn.pending)
                elif isinstance(event, ConnectionClosed):
                    break
                else:
                    new_wait = True
                    self._unanswered(event)
        except BaseException as exc:
            ended: BaseException | None = exc
        else:
            ended = None
        await self._end(ended, watching)

    def _start_wait(self, new_wait: bool) -> bool:
        """Arm the watchdog for a wait for the client; False, once 421 is answered
        instead, when the server is shutting down and the session is idle.

        A command line has ``command`` seconds to arrive from the start of the
        wait for it, however many reads it takes (``new_wait`` is true for the
        first); content has ``data_block`` seconds plus what ``min_data_rate``
        credits for each read (Postfix's per-request deadline and minimum data
        rate). So a client that trickles a byte at a time cannot hold a session
        forever. When the watchdog goes off, :meth:`_close` answers 421. The
        replies due are written within the wait, before the read.
        """
        conn_state = self.conn.state
        idle = conn_state in IDLE_STATES
        if idle and self.state.stopping:
            self._answer(Reply(421, f"{self.options.hostname} Service shutting down", "4.3.2"))
            return False
        watchdog = self._watchdog
        if conn_state is _DATA_STATE or self._in_chunk:
            timeouts = self.options.timeouts
            if self._content_wait and timeouts.min_data_rate:
                watchdog.resume(self._last_read)
            else:
                watchdog.arm(timeouts.data_block, timeouts.min_data_rate)
                self._content_wait = True
        elif new_wait or self._content_wait:
            watchdog.arm(self.options.timeouts.command)
            self._content_wait = False
        else:
            watchdog.resume()
        self._waited_idle = self._waiting_idle = idle
        return True


_ANSWERS: Final[dict[type[object], Callable[[ServerSession, Any], Awaitable[None] | None]]] = {
    MessageData: ServerSession._content,
    EndOfMessage: ServerSession._end_of_message,
    RejectedMessage: ServerSession._rejected,
    BadCommand: ServerSession._bad_command,
    Auth: ServerSession._authenticate,
    AuthResponse: ServerSession._authenticate,
    Ehlo: ServerSession._hello,
    Helo: ServerSession._hello,
    Lhlo: ServerSession._hello,
    Mail: ServerSession._mail,
    Rcpt: ServerSession._rcpt,
    Data: ServerSession._data,
    Bdat: ServerSession._bdat,
    Rset: ServerSession._rset,
    Noop: ServerSession._noop,
    Quit: ServerSession._quit,
    StartTls: ServerSession._starttls,
    Vrfy: ServerSession._vrfy,
    Expn: ServerSession._expn,
    Help: ServerSession._help,
    Xclient: ServerSession._xclient,
    Xforward: ServerSession._xforward,
}
"""Event type -> how a session answers it: one method per event, as the machine has
one rule per command. Each returns None once it has answered, or what the session
awaits to answer (a handler's hook, say): the everyday events cost no coroutine."""
