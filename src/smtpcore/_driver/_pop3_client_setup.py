"""The POP3 client's session set-up: connect, CAPA, STLS, UTF8, and USER/PASS, APOP or AUTH.

What happens in the AUTHORIZATION state (RFC 1939 §4): the greeting, CAPA
(RFC 2449 §5), STLS as required or as offered (RFC 2595 §4), UTF8 (RFC 6856),
and a login with USER and PASS, APOP (RFC 1939 §7) or a SASL mechanism (RFC
5034), none that shows a reusable secret without TLS (RFC 2595 §2.2). Kept
apart from the transaction: none of it runs once the maildrop is open.
"""

from __future__ import annotations

from typing import Final

from smtpcore._driver._client_base import one_call, sasl_failure_text
from smtpcore._driver._pop3_client_content import POP3ClientContent
from smtpcore._driver._pop3_errors import (
    POP3AuthenticationError,
    POP3Error,
    POP3ProtocolError,
    POP3ResponseError,
    POP3TLSNotAvailable,
)
from smtpcore._errors import LocalProtocolError
from smtpcore.pop3 import (
    Apop,
    AuthenticationFailed,
    Capa,
    ClientAuth,
    ClientConnection,
    Continue,
    Err,
    Ok,
    Pass,
    Quit,
    State,
    Stls,
    User,
    Utf8,
    apop_digest,
)
from smtpcore.sasl import ClientMechanism, SASLError

__all__ = ["POP3ClientSetup"]

_UNCOMMITTED: Final = frozenset({State.AUTHORIZATION, State.USER})
"""The states where QUIT ends the session with nothing committed (RFC 1939 §5, §6)."""


class POP3ClientSetup(POP3ClientContent):
    """The session's opening and login, for :class:`~smtpcore._driver.BasePOP3Client`."""

    hostname: str
    pipelining: bool | None
    stls: bool | None
    greeting: Ok | None

    @one_call
    async def connect(self) -> None:
        """Connect, read the greeting, ask CAPA, and start TLS as configured.

        ``stls=True`` and a server that offers no STLS raises
        :class:`POP3TLSNotAvailable`; one that refuses it, :class:`POP3ResponseError`.
        After either, QUIT is said before the close, its answer not waited for
        (RFC 1939 §5: in AUTHORIZATION it ends the session and commits nothing), as
        after any error that leaves the session between commands; the connection is
        closed on every error."""
        await self._open_transport()
        try:
            tls = await self._tls_from_the_start()
            conn = self._conn = ClientConnection(self.hostname, pipelining=self.pipelining)
            conn.tls = tls
            greeting = await self._status(self.timeouts.greeting)
            if isinstance(greeting, Err):
                raise POP3ResponseError("connection", greeting)
            if not isinstance(greeting, Ok):
                raise POP3ProtocolError(f"unexpected greeting {greeting!r}")
            self.greeting = greeting
            await self._capa()
            if self.stls is not False and not conn.tls:
                if "STLS" in (conn.capabilities or {}):
                    await self._stls()
                elif self.stls:
                    raise POP3TLSNotAvailable("the server does not offer STLS")
        except BaseException as exc:
            await self._end_failed_connect(exc)
            raise

    def _can_quit_unwaited(self) -> bool:
        """Between commands in AUTHORIZATION, where QUIT removes nothing (RFC 1939 §5;
        in TRANSACTION it would commit the deletions, which a failure must not)."""
        conn = self._conn
        return (
            conn is not None
            and conn.state in _UNCOMMITTED
            and not conn.outstanding
            and self._unread is None
            and not self._owed
            and not self._peer_closed
        )

    async def _write_quit(self) -> None:
        await self._write(await self._send(Quit()))

    async def _capa(self) -> None:
        await self._ask(Capa())
        await self._drain()

    async def _stls(self) -> None:
        await self._command(Stls())
        await self._handshake()
        self.connection.tls_started()
        self._tls_just_started = True  # CAPA's answer takes the session tickets
        await self._capa()

    @one_call
    async def utf8(self) -> None:
        """UTF8 (RFC 6856 §2): switch the session to UTF-8, before logging in; from
        then on the server sends messages with UTF-8 headers as they are stored.

        :class:`POP3Error` when the server does not list UTF8 in CAPA (RFC 6856 §2: a
        client issues it only then), :class:`POP3ResponseError` when it refuses.
        """
        if "UTF8" not in (self.connection.capabilities or {}):
            raise POP3Error("the server does not offer UTF8 (RFC 6856 §2)")
        await self._command(Utf8())

    @one_call
    async def login(self, user: str, password: str, *, apop: bool = False) -> None:
        """Log in with USER and PASS, or with APOP when ``apop`` is set (RFC 1939 §7).

        APOP sends a digest rather than the password; it needs a server that
        put a timestamp in its greeting (:class:`POP3Error` if it did not).
        Raises :class:`POP3AuthenticationError` when refused. A non-ASCII user name
        or password is :class:`POP3Error`, before anything is sent, unless CAPA listed
        ``UTF8 USER`` (RFC 6856 §2.1); :meth:`authenticate` carries UTF-8 anywhere.
        USER/PASS on a session without TLS is :class:`POP3AuthenticationNotAvailable`,
        before anything is sent, unless ``allow_plaintext_auth`` (RFC 2595 §2.2).
        """
        conn = self.connection
        if not apop:
            self._refuse_without_tls("USER/PASS", tls=conn.tls)
        if not (user.isascii() and password.isascii()) and not conn.utf8_login:
            raise POP3Error(
                "cannot log in: the server does not list UTF8 USER in CAPA, and a non-ASCII "
                "user name or password may not go in USER, PASS or APOP without it "
                "(RFC 6856 §2.1); AUTH with a SASL mechanism carries UTF-8"
            )
        try:
            if apop:
                if conn.apop_timestamp is None:
                    raise POP3Error("the server offers no APOP (no timestamp in its greeting)")
                digest = apop_digest(conn.apop_timestamp, password)
                await self._command(Apop(user, digest), error=POP3AuthenticationError)
            else:
                await self._command(User(user), error=POP3AuthenticationError)
                await self._command(Pass(password), error=POP3AuthenticationError)
        except LocalProtocolError as exc:
            raise POP3Error(f"cannot log in: {exc}") from exc
        if conn.capabilities is not None:
            await self._capa()  # RFC 2449 §5: the list may change after login

    @one_call
    async def authenticate(self, mechanism: ClientMechanism) -> None:
        """Log in with a SASL mechanism (RFC 5034), such as
        :class:`~smtpcore.sasl.ScramSHA256Client`.

        Raises :class:`POP3AuthenticationError` when refused, and
        :class:`POP3ProtocolError` when the server fails to prove itself (SCRAM) or
        reports success before the client sent its part (a password, a token).
        A server that logs the client in all the same (``+OK`` without a valid
        proof, after the client's ``*``, or before the client sent its part: RFC 4422
        §3.6) may be an impostor, and the exchange is
        unsuccessful (RFC 5802 §5): the connection is closed, and a later call raises
        :class:`POP3ConnectionError`. One that refuses (``-ERR``) leaves the session
        where it was, not logged in.
        A mechanism that shows a reusable secret (PLAIN, LOGIN, a bearer token) on a
        session without TLS is :class:`POP3AuthenticationNotAvailable`, before
        anything is sent, unless ``allow_plaintext_auth`` (RFC 2595 §6).
        """
        if mechanism.requires_tls:
            self._refuse_without_tls(mechanism.name, tls=self.connection.tls)
        flow = ClientAuth(mechanism, max_auth_line=self.connection.max_auth_line)
        response = await self._ask(flow.start())
        try:
            while isinstance(response, Continue):
                # After a "*" (the mechanism refused a challenge) respond() raises:
                # the server's answer to the cancel ends the exchange (RFC 5034 §4).
                await self._write(await self._send(flow.respond(response)))
                response = await self._status(self.timeouts.response)
            flow.finish(response)
        except AuthenticationFailed as exc:
            cause = exc.__cause__
            if isinstance(cause, SASLError):
                text = sasl_failure_text(f"AUTH {mechanism.name}", cause)
                if not isinstance(exc.response, Err):
                    # Not refused: the server's side is logged in (or still challenging)
                    # where the client's cannot be. The session is lost, as after any
                    # answer the client cannot take.
                    await self._abort()
                    text = f"{text}: the connection is closed"
                raise POP3ProtocolError(text) from cause
            assert isinstance(exc.response, Err)  # finish() raises without a cause on -ERR
            raise POP3AuthenticationError(f"AUTH {mechanism.name}", exc.response) from None
        if self.connection.capabilities is not None:
            await self._capa()
