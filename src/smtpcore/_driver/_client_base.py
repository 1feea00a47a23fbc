"""What an SMTP client session and a POP3 client session share.

Both open one connection through the adapter's ``_open``, may run the TLS
handshake on it (at once, or after STARTTLS / STLS), and close it; only the
errors they raise differ, and each subclass names its own.

A session is one conversation: a call made while another is in progress on
the same client (from another task or thread) is refused at once
(:func:`one_call`), rather than have the two interleave their commands and
read each other's answers.
"""

from __future__ import annotations

import enum
import functools
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, ClassVar, Concatenate, Final, ParamSpec, Protocol, TypeVar

from smtpcore._driver._logtext import describe_error
from smtpcore._driver._transport import Link
from smtpcore._ip import host_port

__all__ = ["PLAINTEXT_AUTH_HINT", "BaseClient", "one_call", "sasl_failure_text"]

_C = TypeVar("_C", bound="BaseClient")
_P = ParamSpec("_P")
_T = TypeVar("_T")

_BUSY = "another call is in progress on this session"

PLAINTEXT_AUTH_HINT: Final = "allow_plaintext_auth=True to send anyway"
"""What a login refused for want of TLS says to send it anyway: the keyword of the
SMTP and POP3 clients alike."""


def sasl_failure_text(command: str, error: BaseException) -> str:
    """The message of an AUTH the client ended over ``error``: the command, then the
    client's reason (the mechanism's own, such as a SCRAM iteration count refused, or
    its wrapping, such as a server signature that does not match, RFC 5802 §9), in the
    same words from the SMTP and POP3 clients;
    the ``*`` the client sent (RFC 4954 §4, RFC 5034 §4) says nothing of it."""
    return f"{command}: {error}"


class _Hold:
    """A loop over a client's async iterator (POP3's ``retrieve_chunks``), which holds
    the session while it waits between items; ``task`` is the one iterating it."""

    __slots__ = ("taken", "task")

    def __init__(self) -> None:
        self.task: object = None
        self.taken = False
        """Whether a later call of the same task took the session over."""


def one_call(
    method: Callable[Concatenate[_C, _P], Awaitable[_T]],
) -> Callable[Concatenate[_C, _P], Coroutine[Any, Any, _T]]:
    """``method``, a public call of a client, run while no other is in progress on
    its session: two calls at once would interleave their commands on the wire
    and each read the other's answers. A bool checked and set, no lock: the
    second call is refused at once (:meth:`BaseClient._second_call`)."""

    @functools.wraps(method)
    async def call(self: _C, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._busy:
            self._second_call()
        self._busy = True
        try:
            return await method(self, *args, **kwargs)
        finally:
            self._busy = False

    return call


class _ClientTimeouts(Protocol):
    @property
    def connect(self) -> float | None: ...

    @property
    def tls_handshake(self) -> float | None: ...


class _Machine(Protocol):
    """What the base needs of either protocol's client machine (SMTP's or POP3's)."""

    @property
    def state(self) -> enum.Enum: ...

    @property
    def buffered(self) -> int: ...


class _ErrorFactory(Protocol):
    """An exception class, or a factory of one, called with the message alone."""

    def __call__(self, message: str, /) -> Exception: ...


class BaseClient:
    """The connection of one client session; subclasses speak the protocol."""

    connection_error: ClassVar[type[Exception]] = ConnectionError
    """Raised when the connection cannot be opened or the handshake fails."""
    timeout_error: ClassVar[type[Exception]] = TimeoutError
    """Raised when opening the connection or the handshake takes too long."""

    host: str
    port: int
    ssl_context: ssl.SSLContext | None
    server_hostname: str
    tls_on_connect: bool
    _unix_path: str | None = None
    """The Unix socket connected to instead of ``host`` and ``port`` (see
    ``ClientConstructors.over_unix_socket``)."""
    timeouts: _ClientTimeouts
    _transport: Link | None
    _conn: _Machine | None
    """The machine of the session, from ``connect()`` on (each protocol's own)."""
    _ended_states: ClassVar[frozenset[enum.Enum]]
    """The machine's states after which the session cannot go on (its CLOSED and
    ERROR): each protocol names its own."""
    misuse_error: ClassVar[type[Exception]] = RuntimeError
    """Raised for a call the session cannot take: one made while another is in progress."""
    _busy: bool = False
    """Whether a call is in progress on the session (see :func:`one_call`)."""
    _hold: _Hold | None = None
    """The loop that holds the session between the items of an async iterator."""
    _plaintext_auth_error: ClassVar[_ErrorFactory] = PermissionError
    """Builds, from its message, the error for a login :meth:`_refuse_without_tls`
    refused: each protocol's own, ``local`` (the server refused nothing) and with
    ``needs_tls`` true, as :attr:`connection_error` is the protocol's own."""
    allow_plaintext_auth: bool = False
    """Whether a login may show a reusable secret (a password, a bearer token) on a
    session without TLS (RFC 2595 §2.2, RFC 4954 §4); false by default."""

    def _refuse_without_tls(self, login: str, *, tls: bool) -> None:
        """Refuse ``login``, one that shows a reusable secret (the password itself in
        POP3's PASS or in SASL PLAIN and LOGIN, a bearer token), before anything is
        sent, on a session without TLS unless :attr:`allow_plaintext_auth`: anyone on
        the path could read it, and an attacker who strips STARTTLS or STLS from the
        server's list would get it for the asking. RFC 4954 §4 and RFC 4616 §5 (SMTP
        AUTH, PLAIN), RFC 2595 §2.2 and §6 (POP3: a client "MUST be configurable to
        refuse all clear-text login commands or mechanisms"). One rule for both
        protocols; loopback and Unix sockets get no exemption, since the client cannot
        tell a local peer from a forwarded one."""
        if not (tls or self.allow_plaintext_auth):
            raise self._plaintext_auth_error(f"{login} needs TLS ({PLAINTEXT_AUTH_HINT})")

    @property
    def is_connected(self) -> bool:
        """Whether the connection is open and the session can go on: true from the
        moment ``connect()`` opens the connection (the TLS handshake and the greeting
        still to come) until it is closed (``quit()``, ``close()``, ``connect()``
        failing, an error after which the client closed it) or the session ends. A
        refusal (an AUTH refused with ``535`` or ``-ERR``, a recipient refused) leaves
        it true; a lost connection, a timeout, a ``421``, a reply that breaks the
        protocol, or an AUTH the client cannot accept (a SCRAM server that does not
        prove itself, RFC 5802 §5) make it false. What smtplib users read from ``sock
        is None``, and aiosmtplib users from ``is_connected``: after an error, whether
        the session is still there, without making the next call. Unlike
        aiosmtplib's, it does not turn false at once when a server closes an idle
        session: the client reads nothing between calls, and the next call finds the
        close. ``connect()`` refuses while it is true, and opens a new session
        once it is false."""
        conn = self._conn  # None from the open until connect() makes the machine
        return self._transport is not None and (
            conn is None or conn.state not in self._ended_states
        )

    def _current_task(self) -> object:
        """Who is calling: the adapter's task; here, for a blocking client, the thread."""
        return threading.get_ident()

    def _second_call(self) -> None:
        """A call made while the session is busy: refused, unless what holds it is
        a loop that the caller's own task left waiting between items (``break``
        out of ``retrieve_chunks``, which does not close the iterator). The call
        then takes the session over: the loop, if resumed, raises, and what it
        left unread is read and dropped before the call's own command."""
        hold = self._hold
        if hold is None or hold.task != self._current_task():
            raise self.misuse_error(_BUSY)
        hold.taken = True
        self._hold = None

    async def _held(self, items: AsyncIterator[_T]) -> AsyncIterator[_T]:
        """``items``, for the caller's loop, which holds the session from its first
        item to its end, waits between items included: a call from another task
        meanwhile is refused (:meth:`_second_call`)."""
        if self._busy:
            self._second_call()
        self._busy = True
        hold = _Hold()
        try:
            async for item in items:
                hold.task = self._current_task()
                self._hold = hold
                yield item
                if hold.taken:
                    raise self.misuse_error("a later call took the session over from this loop")
                self._hold = None
        finally:
            if not hold.taken:
                self._hold = None
                self._busy = False

    async def _open(self, host: str, port: int) -> Link:
        """A plain TCP connection (the adapter's job), under the connect timeout."""
        raise NotImplementedError

    async def connect(self) -> None:
        """Open the session: connect, read the greeting, and so on."""
        raise NotImplementedError

    async def quit(self) -> None:
        """End the session politely and close the connection."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the connection without QUIT (in POP3, nothing marked deleted is removed)."""
        await self._abort()

    def channel_bindings(self) -> dict[str, bytes]:
        """The channel binding data of the open connection's TLS layer, by type.

        ``{"tls-exporter": ...}`` (RFC 9266) when the transport gives it, for a
        SCRAM-SHA-256-PLUS mechanism (:func:`smtpcore.sasl.scram_client`);
        empty before TLS, and over the adapters' own transports: the standard
        library's :mod:`ssl` cannot export keying material.
        """
        return {} if self._transport is None else self._transport.channel_bindings()

    def _context(self) -> ssl.SSLContext:
        if self.ssl_context is None:
            self.ssl_context = ssl.create_default_context()
        return self.ssl_context

    async def _open_transport(self) -> None:
        """Open the connection, turning failures into the protocol's own errors.

        A session that can go on (:attr:`is_connected`) is refused rather than
        replaced: its socket would be left behind, open, without QUIT. One that has
        ended with its socket still open (the server closed it, an SMTP ``221`` to a
        QUIT sent through ``command()``) has nothing left to say: the socket is closed,
        and the new connection opens. A POP3 session leaves none open: the call that
        finds it ended closes its socket before it raises."""
        if self.is_connected:
            raise self.connection_error("already connected: quit() or close() the session first")
        self._refuse_spent()  # before the ended session's socket goes: it may be the caller's
        await self._abort()
        # The ended session goes with its socket, its machine and all it left (a login, a
        # refused STARTTLS, sizes listed): nothing, a failed handshake's QUIT say, or a
        # connect() that fails here, may read the old one's state.
        self._conn = None
        self._new_session()
        # A Unix socket's path names where, rather than the host named for TLS.
        where = self._unix_path or host_port(self.host, self.port)
        try:
            self._transport = await self._open(self.host, self.port)
        except self.connection_error:
            raise  # the protocol's own already (a refusal of this client's)
        except TimeoutError as exc:
            raise self.timeout_error(f"connecting to {where} timed out") from exc
        except OSError as exc:
            raise self.connection_error(f"cannot connect to {where}: {exc}") from exc

    async def _tls_from_the_start(self) -> bool:
        """Whether the session is under TLS from its first byte: a stream given already
        under TLS (a ``trio.SSLStream``, an asyncio stream opened with ``ssl=``), or
        ``tls_on_connect``, whose handshake this makes."""
        transport = self._transport
        assert transport is not None
        finish_handshake = getattr(transport, "finish_handshake", None)
        if finish_handshake is not None:
            await self._shake_hands(finish_handshake)
        if transport.tls is not None:
            return True
        if self.tls_on_connect:
            await self._handshake()
            return True
        return False

    async def _handshake(self) -> None:
        """The handshake of STARTTLS / STLS (RFC 3207 §4, RFC 2595 §4) or of
        ``tls_on_connect`` (RFC 8314 §3.3), over the open connection."""
        transport = self._transport
        assert transport is not None
        await self._shake_hands(
            functools.partial(
                transport.start_tls,
                self._context(),
                server_side=False,
                server_hostname=self.server_hostname,
            )
        )

    async def _shake_hands(self, handshake: Callable[[], Awaitable[None]]) -> None:
        """Run ``handshake`` under the TLS handshake timeout, its failure the
        protocol's own error (:meth:`handshake_error`): one place for every handshake
        this client makes, whether it starts TLS or finishes a stream's given under it."""
        transport = self._transport
        assert transport is not None
        try:
            async with transport.deadline(self.timeouts.tls_handshake):
                await handshake()
        except TimeoutError as exc:
            raise self.timeout_error("TLS handshake timed out") from exc
        except OSError as exc:
            raise self.handshake_error(exc) from exc

    def handshake_error(self, exc: OSError) -> Exception:
        """The :attr:`connection_error` for a failed TLS handshake. When our own check
        of the server's certificate failed (``ssl.SSLCertVerificationError``: RFC 3207
        §4.1, RFC 2595 §2.4), the server refused nothing and this client declined to
        go on, so the error is ``local``, as the client's other refusals are. The reason
        is :func:`describe_error`'s: asyncio raises a bare ``ConnectionResetError()``
        for a server that closes in the handshake, and "failed: " must name something."""
        reason = f"TLS handshake failed: {describe_error(exc)}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return self.local_connection_error(reason)
        return self.connection_error(reason)

    def local_connection_error(self, message: str) -> Exception:
        """The :attr:`connection_error` for a connection this client declined to make
        or go on with, the server having refused nothing: its ``local`` is true."""
        error = self.connection_error(message)
        # connection_error is typed as any Exception; both families declare local.
        setattr(error, "local", True)  # noqa: B010
        return error

    def _refuse_spent(self) -> None:
        """Raise the client's connection error when it can open no new connection (a
        transport given for one session, used); a client that opens its own, never."""

    def _new_session(self) -> None:
        """Forget what the last session left; each protocol says what that is."""
        raise NotImplementedError

    async def _abort(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.aclose()

    def _can_quit_unwaited(self) -> bool:
        """Whether QUIT may go now with its answer left unread and no harm done: the
        session stands between commands, no answer is due, and QUIT commits nothing
        the caller has not asked for. Each protocol says when (false by default)."""
        return False

    def _holds_unread(self) -> bool:
        """Whether the machine holds bytes from the server not yet read as events (a
        partial line after a refusal, maybe the start of a 421): QUIT would first
        have to read them, and a courtesy never waits on the network. Between commands
        both machines hold nothing else (POP3's CAPA listing is no longer kept)."""
        conn = self._conn
        return conn is not None and conn.buffered > 0

    async def _write_quit(self) -> None:
        """Write QUIT, bounded by the protocol's own write timeout."""
        raise NotImplementedError

    async def _quit_unwaited(self) -> None:
        """Say QUIT where :meth:`_can_quit_unwaited` allows it, without waiting for its
        answer, then close: how a session the client gives up on ends (RFC 5321
        §4.1.1.10: a client "MUST NOT intentionally close the transmission channel
        until it sends a QUIT command"; RFC 1939 §5 has QUIT end an AUTHORIZATION
        session). Waiting for the answer is only a SHOULD, and a server that never gives
        it would hold the caller for the whole QUIT timeout. Nor is QUIT said while
        the machine holds unread bytes (:meth:`_holds_unread`): reading them first,
        under the command timeout, held a failing ``connect()`` that long. An error on
        the way is dropped: the caller's own error is the news."""
        try:
            if (
                self._transport is not None
                and self._can_quit_unwaited()
                and not self._holds_unread()
            ):
                await self._write_quit()
        except Exception:  # the caller's own exception is the news
            pass
        finally:
            await self._abort()

    async def _end_failed_connect(self, error: BaseException) -> None:
        """End the session ``connect()`` failed to open: with QUIT unwaited
        (:meth:`_quit_unwaited`) after an ``Exception`` that leaves the session between
        commands (a refused greeting, hello, STARTTLS or STLS, a TLS the client requires
        and the server does not offer, a refused login), else at once (a cancellation,
        ``KeyboardInterrupt``: the task asked to stop, not to wait on the network)."""
        if isinstance(error, Exception):
            await self._quit_unwaited()
        else:
            await self._abort()

    async def __aenter__(self: _C) -> _C:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leave the block: QUIT, or after an exception only close. In POP3 that
        is what must happen: QUIT in the TRANSACTION state removes the messages
        marked deleted (RFC 1939 §6), which a failure must not commit. The SMTP
        client, whose QUIT commits nothing, says it where it can (its own
        ``__aexit__``)."""
        if exc_type is None:
            await self.quit()
        else:
            await self._abort()
