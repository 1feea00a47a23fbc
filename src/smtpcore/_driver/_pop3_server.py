"""The one POP3 server session loop, shared by the asyncio and trio adapters.

:class:`POP3ServerSession` drives a :class:`~smtpcore.pop3.ServerConnection`
over a :class:`~smtpcore._driver.Transport` and serves the maildrop a
:class:`~smtpcore.maildrop.Mailstore` opens. Answers to pipelined commands
(RFC 2449 §6.6) are written together once the commands already received are
answered; a message is streamed from the maildrop in chunks, never held whole.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import socket
import time
from types import CoroutineType
from typing import TYPE_CHECKING, Final

from smtpcore._driver._factory import (
    MachinesInUse,
)
from smtpcore._driver._listener import (
    BaseListener,
    ConnectionLost,
    SessionRegistry,
    session_address,
)
from smtpcore._driver._logtext import (
    describe_error,
)
from smtpcore._driver._pop3_server_auth import _SessionAuth
from smtpcore._driver._pop3_server_machine import SessionMachine
from smtpcore._driver._pop3_server_options import (
    _NO_LOGINS,
    POP3ServerKeywords,
    POP3ServerOptions,
)
from smtpcore._driver._pop3_server_transaction import (
    _TRANSACTION_COMMANDS,
)
from smtpcore._driver._transport import Link
from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._sentinels import NEED_DATA, PAUSED
from smtpcore.maildrop import (
    Mailstore,
    POP3Session,
)
from smtpcore.pop3 import (
    Apop,
    Auth,
    AuthMechanisms,
    AuthResponse,
    BadCommand,
    Capa,
    ConnectionClosed,
    Err,
    Event,
    MessageNumbers,
    Ok,
    Pass,
    Quit,
    State,
    Stls,
    User,
    Utf8,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "BasePOP3Server",
    "POP3ServerKeywords",
    "POP3ServerOptions",
    "POP3ServerSession",
    "POP3ServerState",
]

logger = logging.getLogger("smtpcore.pop3.server")

READ_SIZE: Final = 65536


_SHUTTING_DOWN: Final = Err("Server shutting down", code="SYS/TEMP")
_UNAVAILABLE: Final = Err("Service not available, try again later", code="SYS/TEMP")
_greetings = itertools.count(1)


class POP3ServerState(SessionRegistry["POP3ServerSession"]):
    """What the sessions of one POP3 server share: options, the mailstore, the live
    sessions, and whether the server is shutting down."""

    def __init__(self, store: Mailstore, options: POP3ServerOptions) -> None:
        busy = Err("Too many connections, try again later", code="SYS/TEMP")
        address_busy = Err("Too many connections from your address", code="SYS/TEMP")
        # On a TLS-on-connect port a plaintext answer would be noise: just close.
        plain = not options.tls_on_connect
        super().__init__(
            options.max_sessions,
            busy.to_bytes() if plain else b"",
            max_per_address=options.max_sessions_per_address,
            ipv6_prefix_length=options.client_ipv6_prefix_length,
            address_busy_reply=address_busy.to_bytes() if plain else b"",
            stopping_reply=_SHUTTING_DOWN.to_bytes() if plain else b"",
            proxy_networks=options.proxy_networks,
            proxy_timeout=options.proxy_protocol_timeout,
        )
        self.store = store
        self.options = options
        self.factory_machines = MachinesInUse()
        """The ``connection_factory``'s machines the sessions run on."""
        kind = type(store)
        self.user_login = kind.check_password is not Mailstore.check_password
        self.apop_login = kind.apop_secret is not Mailstore.apop_secret
        """Whether the store serves APOP at all; its ``apop`` says, per session, whether
        it does now."""
        self.sasl_login = kind.sasl_mechanisms is not Mailstore.sasl_mechanisms

    def new_session(self, transport: Link, peer: tuple[str, int] | None) -> POP3ServerSession:
        return POP3ServerSession(transport, self, peer)


class POP3ServerSession(SessionMachine):
    """One connection, from greeting to close."""

    __slots__ = ()

    logger = logger
    protocol = "POP3"
    state: POP3ServerState
    session: POP3Session

    def __init__(
        self, transport: Link, state: POP3ServerState, peer: tuple[str, int] | None
    ) -> None:
        # ServedSession's fields are set here, as in the SMTP session's constructor
        # (_smtp_server.ServerSession.__init__): a base constructor costs a call a connection.
        self.transport = transport
        self.state = state
        self.options = options = state.options
        self.store = state.store
        self.session = POP3Session(
            hostname=options.hostname,
            peer=peer,
            local=session_address(transport.local_address),
        )
        self.conn = None
        self.maildrop = None
        self.listing = ()
        self.numbers = MessageNumbers(0)
        self.retrieved = set()
        self._sasl = _SessionAuth({})
        self._failures = 0
        self._out: list[bytes] = []
        self._out_size = 0
        self._write_cut = False
        self._closing = False
        self._waiting_idle = False

    # -- the loop ---------------------------------------------------------

    async def _ended(self) -> None:
        if self.options.connection_factory is not None and self.conn is not None:
            self.state.factory_machines.give_back(self.conn)
        await self._release()

    async def _open(self) -> None:
        options = self.options
        timeouts = options.timeouts
        client = await self._known_client(timeouts.send)
        if options.tls_on_connect:
            await self._handshake()
        elif self.session.tls is None:
            finishing = self.tls_from_the_start(self.options.timeouts.tls_handshake)
            if finishing is not None:
                await finishing
            self.session.tls = self.transport.tls
        logins = await self._logins(client)
        if options.connection_factory is None:
            conn = self.conn = options._session_connection(logins)
        else:
            try:
                conn = self.conn = self._factory_connection(logins)
            except BaseException as exc:
                if not self._call_failed(exc):
                    raise
                # As a server that cannot serve (RFC 1939 §4 allows -ERR for the greeting).
                logger.error("the session is refused: %s", describe_error(exc), exc_info=exc)
                self.conn = options._session_connection(_NO_LOGINS)
                self._goodbye(_UNAVAILABLE)
                return
        conn.tls = self.session.tls is not None
        if self.state.stopping:
            self._answer(_SHUTTING_DOWN)
        else:
            try:
                greeting = conn.greeting(os.getpid(), f"{time.time_ns()}.{next(_greetings)}")
            except LocalProtocolError:  # a host name unfit for the APOP timestamp
                greeting = conn.greeting()
            self._answer(greeting)

    async def _close(self, timed_out: bool) -> bool:
        if timed_out:
            if not self.state.stopping:
                # RFC 1939 §3: the autologout timer closes without a response, and
                # without entering UPDATE.
                raise ConnectionLost from None
            self._goodbye(_SHUTTING_DOWN)
        await self._flush()
        # The server's own goodbye (a shutdown's, a failed maildrop's) or a protocol
        # error's -ERR (too many bad commands): not after QUIT, nor the client's close.
        conn = self.conn
        return self._closing or (conn is not None and conn.state is State.ERROR)

    async def run(self) -> None:
        """Serve the connection to its end; never raises but for cancellation (see
        :class:`~smtpcore._driver._listener.ServedSession`).

        The loop answers the client's commands until the session ends, written
        out here rather than in a coroutine of its own, with its read, so that
        a session waiting for its client is suspended in this one frame.
        """
        self.state.sessions.setdefault(self)  # as admitted, or under no address
        watching = None  # the watchdog's block, once entered (see ServedSession.run)
        try:
            await self._open()
            block = self.transport.watchdog()
            watchdog = self._watchdog = await block.__aenter__()
            watching = block
            conn = self.conn
            assert conn is not None
            new_wait = True  # the next read starts a wait for a new command
            while conn.state is not State.CLOSED and not self._closing:
                try:
                    event = conn.next_event()
                except RemoteProtocolError as exc:
                    if isinstance(exc.reply_hint, Err):
                        self._out.append(conn.send(exc.reply_hint))
                    break
                if event is NEED_DATA:
                    # Write the answers due, then wait for the next command under
                    # the autologout timer (the watchdog: when it goes off,
                    # _close closes). It runs from the start of the wait for a
                    # command until its line is complete, however many reads it
                    # takes: a client that trickles a byte at a time cannot hold
                    # a session forever.
                    if self.state.stopping:
                        self._goodbye(_SHUTTING_DOWN)
                        break
                    if new_wait:
                        watchdog.arm(self.options.timeouts.autologout)
                    else:
                        watchdog.resume()
                    try:
                        if self._out:
                            await self._write_out()
                            if self.state.stopping:  # begun during the write: no wait
                                self._goodbye(_SHUTTING_DOWN)
                                break
                        # A shutdown may wake the wait, not the write.
                        self._waiting_idle = True
                        # The bytes, or a wait for them (see Link.receive_or_wait).
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
                        watchdog.disarm()
                    conn.receive_data(data)
                    del data, got  # the machine's now: a waiting session must not keep it
                    new_wait = False
                elif event is PAUSED:  # pragma: no cover - every event is answered at once
                    raise RuntimeError(f"machine paused in {conn.state}")
                elif isinstance(event, ConnectionClosed):
                    break
                else:
                    new_wait = True
                    await self._dispatch(event)
        except BaseException as exc:
            ended: BaseException | None = exc
        else:
            ended = None
        await self._end(ended, watching)

    # -- commands ---------------------------------------------------------

    async def _dispatch(self, event: Event) -> None:
        """Answer a command; those of the TRANSACTION state asked first, the commands
        of nearly every exchange of a session."""
        conn = self.conn
        assert conn is not None
        if isinstance(event, _TRANSACTION_COMMANDS):
            await self._transaction(event)
        elif isinstance(event, BadCommand):
            await self._bad_command(event)
        elif isinstance(event, Capa):
            self._lines(Ok("Capability list follows"), ["CAPA", *conn.capabilities()])
        elif isinstance(event, AuthMechanisms):
            self._lines(Ok("Mechanisms follow"), conn.offered_mechanisms())
        elif isinstance(event, User):
            self._answer(Ok("Send PASS"))  # the same for every name: no user probing
        elif isinstance(event, Pass):
            await self._pass(event)
        elif isinstance(event, Apop):
            await self._apop(event)
        elif isinstance(event, Auth):
            await self._auth(event)
        elif isinstance(event, AuthResponse):
            await self._auth_response(event)
        elif isinstance(event, Stls):
            await self._stls()
        elif isinstance(event, Utf8):
            self._answer(Ok("UTF8 enabled"))
        elif isinstance(event, Quit):
            await self._quit()
        else:  # pragma: no cover - the machine gives no other command
            self._answer(Err("Command not implemented"))

    async def _stls(self) -> None:
        conn = self.conn
        assert conn is not None
        if self.options.ssl_context is None:  # a machine offering what the server cannot
            self._answer(Err("TLS not available"))
            return
        self._answer(Ok("Begin TLS negotiation"))
        await self._flush()
        await self._handshake()
        conn.tls_started()
        if self.state.sasl_login:
            self._sasl.mechanisms = await self._offered_mechanisms()
            conn.sasl_mechanisms = tuple(self._sasl.mechanisms)

    async def _handshake(self) -> None:
        context = self.options.ssl_context
        assert context is not None
        await self._shake_hands(
            functools.partial(self.transport.start_tls, context, server_side=True),
            self.options.timeouts.tls_handshake,
        )
        self.session.tls = self.transport.tls


class BasePOP3Server(BaseListener[POP3ServerSession]):
    """What the asyncio and trio ``POP3Server`` share: options, state and addresses.

    ``store`` logs users in and opens their maildrops. The server listens on
    ``host`` and ``port`` (port 0 picks a free one; read :attr:`port`), or on
    ``sock``, a socket already bound and listening, or on the Unix socket
    ``unix_path``. ``hostname`` is this
    host's name in the greeting (the FQDN by default). With ``ssl_context``
    the server offers STLS, or, with ``tls_on_connect``, speaks TLS from the
    first byte (port 995). The other keywords are those of
    :class:`POP3ServerOptions`.
    """

    def __init__(
        self,
        store: Mailstore,
        host: str | None = "127.0.0.1",
        port: int = 0,
        *,
        sock: socket.socket | None = None,
        unix_path: str | os.PathLike[str] | None = None,
        backlog: int = 1024,
        hostname: str | None = None,
        **options: Unpack[POP3ServerKeywords],
    ) -> None:
        super().__init__(host, port, sock=sock, unix_path=unix_path, backlog=backlog)
        self.options: POP3ServerOptions = POP3ServerOptions(
            hostname=hostname or socket.getfqdn(), **options
        )
        self.state = POP3ServerState(store, self.options)
