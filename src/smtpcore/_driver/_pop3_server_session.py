"""The one POP3 server session loop, shared by the asyncio and trio adapters.

:class:`POP3ServerSession` drives a :class:`~smtpcore.pop3.ServerConnection`
over a :class:`~smtpcore._driver.Transport` and serves the maildrop a
:class:`~smtpcore.maildrop.Mailstore` opens. Answers to pipelined commands
(RFC 2449 §6.6) are written together once the commands already received are
answered; a message is streamed from the maildrop in chunks, never held whole.

The session is put together from parts with one job each, every one a base
class of :class:`POP3ServerSession` (a method costs the same wherever in them it
is defined: the type's attribute cache finds it in one step), each built on the
parts it uses and no other:

- its answers (:mod:`~smtpcore._driver._pop3_server_replies`), which also hold
  every part's fields;
- the mailstore's calls (:mod:`~smtpcore._driver._pop3_server_store`), on the
  answers;
- the TRANSACTION state (:mod:`~smtpcore._driver._pop3_server_transaction`) and,
  beside it, QUIT and UPDATE (:mod:`~smtpcore._driver._pop3_server_update`),
  each on the mailstore's calls alone;
- logging in (:mod:`~smtpcore._driver._pop3_server_login`), on both: a login is
  answered with the maildrop's totals, and a maildrop that cannot be listed is
  closed again;
- SASL's AUTH (:mod:`~smtpcore._driver._pop3_server_auth`), on logging in, which
  it ends in;
- the session's machine (:mod:`~smtpcore._driver._pop3_server_machine`), on
  SASL's AUTH, whose mechanisms it offers.

Here is what runs them: the loop, the greeting, STLS, the session's end, and
which part answers each command.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import time
from types import CoroutineType
from typing import TYPE_CHECKING, Final

from smtpcore._driver._connection_lost import ConnectionLost
from smtpcore._driver._logtext import describe_error
from smtpcore._driver._pop3_server_auth import SessionAuth
from smtpcore._driver._pop3_server_machine import SessionMachine
from smtpcore._driver._pop3_server_options import NO_LOGINS
from smtpcore._driver._pop3_server_transaction import TRANSACTION_COMMANDS
from smtpcore._driver._session_registry import session_address
from smtpcore._driver._transport import Link
from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._sentinels import NEED_DATA, PAUSED
from smtpcore.maildrop import POP3Session
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
    from smtpcore._driver._pop3_server import POP3ServerState

logger = logging.getLogger("smtpcore.pop3.server")

READ_SIZE: Final = 65536
"""Bytes asked of the transport per read."""

SHUTTING_DOWN: Final = Err("Server shutting down", code="SYS/TEMP")
_UNAVAILABLE: Final = Err("Service not available, try again later", code="SYS/TEMP")

_greetings = itertools.count(1)
"""Greetings made in this process, a part of each APOP timestamp (RFC 1939 §7)."""


class POP3ServerSession(SessionMachine):
    """One connection, from greeting to close."""

    __slots__ = ()

    logger = logger
    protocol = "POP3"

    def __init__(
        self, transport: Link, state: POP3ServerState, peer: tuple[str, int] | None
    ) -> None:
        # ServedSession's fields are set here, as in the SMTP session's constructor
        # (_smtp_server_session.ServerSession.__init__): a base constructor costs a
        # call a connection.
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
        self.surrogates_logged = set()
        self._sasl = SessionAuth({})
        self._failures = 0
        self._out: list[bytes] = []
        self._out_size = 0
        self._write_cut = False
        self._write_unfinished = False
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
                self.conn = options._session_connection(NO_LOGINS)
                self._goodbye(_UNAVAILABLE)
                return
        conn.tls = self.session.tls is not None
        if self.state.stopping:
            self._answer(SHUTTING_DOWN)
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
            self._goodbye(SHUTTING_DOWN)
        await self._flush()
        # The server's own goodbye (a shutdown's, a failed maildrop's) or a protocol
        # error's -ERR (too many bad commands): not after QUIT, nor the client's close.
        conn = self.conn
        return self._closing or (conn is not None and conn.state is State.ERROR)

    async def run(self) -> None:
        """Serve the connection to its end; never raises but for cancellation (see
        :class:`~smtpcore._driver._served_session.ServedSession`).

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
                        self._goodbye(SHUTTING_DOWN)
                        break
                    if new_wait:
                        watchdog.arm(self.options.timeouts.autologout)
                    else:
                        watchdog.resume()
                    try:
                        if self._out:
                            await self._write_out()
                            if self.state.stopping:  # begun during the write: no wait
                                self._goodbye(SHUTTING_DOWN)
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
        if isinstance(event, TRANSACTION_COMMANDS):
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
