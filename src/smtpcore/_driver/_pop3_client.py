"""The one POP3 client session, shared by the asyncio and trio adapters.

:class:`BasePOP3Client` drives a :class:`~smtpcore.pop3.ClientConnection`
over a :class:`~smtpcore._driver.Transport` the adapter opens: greeting,
CAPA, STLS (RFC 2595), a login (USER/PASS, APOP or SASL), then the fetch
commands. Messages are streamed in chunks; when the server lists PIPELINING,
a listing asks LIST and UIDL together and :meth:`~BasePOP3Client.retrieve_many`
keeps several RETR commands in flight (RFC 2449 §6.6).
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypedDict, TypeVar

from smtpcore._dial_name import dial_names
from smtpcore._driver._client_base import one_call, sasl_failure_text
from smtpcore._driver._pop3_client_content import (
    ContentLeft,
    MaxSize,
    POP3ClientContent,
    checked_max_size,
    listing_bound,
    size_bound,
)
from smtpcore._driver._pop3_errors import (
    POP3AuthenticationError,
    POP3AuthenticationNotAvailable,
    POP3ConnectionError,
    POP3Error,
    POP3ProtocolError,
    POP3ResponseError,
    POP3Timeout,
    POP3TLSNotAvailable,
)
from smtpcore._driver._timeouts import DEFAULT_POP3_TIMEOUTS, POP3Timeouts
from smtpcore._driver._trace import Trace, WireTrace
from smtpcore._driver._transport import Link
from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore.pop3 import (
    Apop,
    AuthenticationFailed,
    Capa,
    ClientAuth,
    ClientConnection,
    Continue,
    Dele,
    Err,
    List,
    Noop,
    Ok,
    Pass,
    Quit,
    Retr,
    Rset,
    Stat,
    State,
    Stls,
    Top,
    Uidl,
    User,
    Utf8,
    apop_digest,
    parse_listing,
    parse_stat,
    parse_uid_listing,
)
from smtpcore.sasl import ClientMechanism, SASLError

__all__ = [
    "BasePOP3Client",
    "MessageListing",
    "POP3AuthenticationError",
    "POP3AuthenticationNotAvailable",
    "POP3ClientOptions",
    "POP3ConnectionError",
    "POP3Error",
    "POP3ProtocolError",
    "POP3ResponseError",
    "POP3TLSNotAvailable",
    "POP3Timeout",
    "size_bound",
]

_WINDOW: Final = 8
"""RETR commands kept in flight by :meth:`BasePOP3Client.retrieve_many`: enough to keep
the server busy while the client reads; the machine's pipelining check costs
grow with it."""


_UNCOMMITTED: Final = frozenset({State.AUTHORIZATION, State.USER})
"""The states where QUIT ends the session with nothing committed (RFC 1939 §5, §6)."""


class POP3ClientOptions(TypedDict, total=False):
    """The keyword options of a POP3 client, for functions that pass them on: a
    misspelt one fails type checking."""

    tls_on_connect: bool
    stls: bool | None
    ssl_context: ssl.SSLContext | None
    server_hostname: str | None
    timeouts: POP3Timeouts
    pipelining: bool | None
    hostname: str | None
    allow_plaintext_auth: bool
    trace: Trace | None


@dataclass(frozen=True, slots=True)
class MessageListing:
    """One message of the maildrop: its number in this session, size and unique-id."""

    number: int
    size: int
    """Octets as the server counts them (RFC 1939 §5)."""
    uid: str | None
    """The unique-id (RFC 1939 §7), or ``None`` if the server has no UIDL, gave this
    message none, or gave its id to another message too (see ``repeated_uid``)."""
    repeated_uid: str | None = None
    """The unique-id the server gave this message and another one as well, which RFC
    1939 §7 forbids; only ``list(allow_repeated_uids=True)`` reads such a listing, and
    ``uid`` is then ``None``: the id names no one message, so a client that keeps the
    ids it has fetched must not take it for one."""

    def __post_init__(self) -> None:
        if self.uid is not None and self.repeated_uid is not None:
            raise ValueError("a message listed with a unique-id of its own has no repeated_uid")


class BasePOP3Client(POP3ClientContent):
    """A POP3 client session to ``host``; the adapters add how to open a connection.

    ``tls_on_connect`` speaks TLS from the first byte (port 995, RFC 8314).
    ``stls``: True requires STLS, None (the default) uses it when the server
    offers it, False never does. Certificates are checked against ``host``
    (or ``server_hostname``) with ``ssl_context``, by default
    :func:`ssl.create_default_context`, which verifies them. A non-ASCII ``host``
    or ``server_hostname`` is used in its A-label form, as IDNA 2008 makes it
    (``mx.straße.test``: ``mx.xn--strae-oqa.test``, never ``mx.strasse.test``);
    one IDNA refuses, or a name with an empty label or a label over 63 octets, is a
    ``ValueError`` when the client is built. ``pipelining``
    forces RFC 2449 pipelining on or off; by default it follows CAPA.

    USER/PASS and SASL mechanisms that show a reusable secret (PLAIN, LOGIN,
    bearer tokens) are used only under TLS unless ``allow_plaintext_auth`` is
    true, as in the SMTP clients (RFC 2595 §2.2): a server that does not list
    STLS, or an attacker who strips it, gets :class:`POP3AuthenticationNotAvailable`
    rather than the password. APOP, CRAM-MD5 and SCRAM go without TLS.

    ``trace`` receives every line of the session both ways, as the SMTP
    clients' does: a callback ``trace(direction, line)`` or a
    :class:`logging.Logger`; the PASS argument, the APOP digest, the AUTH
    initial response and every SASL answer show as ``****``.
    """

    connection_error = POP3ConnectionError
    timeout_error = POP3Timeout
    misuse_error = POP3Error
    _plaintext_auth_error = POP3AuthenticationNotAvailable
    timeouts: POP3Timeouts

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        tls_on_connect: bool = False,
        stls: bool | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeouts: POP3Timeouts = DEFAULT_POP3_TIMEOUTS,
        pipelining: bool | None = None,
        hostname: str | None = None,
        allow_plaintext_auth: bool = False,
        trace: Trace | None = None,
    ) -> None:
        self.host, self.server_hostname = dial_names(host, server_hostname)
        self.port = port if port is not None else (995 if tls_on_connect else 110)
        self.tls_on_connect = tls_on_connect
        self.stls = stls
        self.ssl_context = ssl_context
        self.timeouts = timeouts
        self.pipelining = pipelining
        self.hostname = hostname or socket.gethostname()
        self.allow_plaintext_auth = allow_plaintext_auth
        self.greeting: Ok | None = None
        """The server's greeting."""
        self._trace = None if trace is None else WireTrace(trace)
        self._transport: Link | None = None
        self._conn: ClientConnection | None = None
        self._new_session()

    def _new_session(self) -> None:
        """Forget what the last session left: a session cut off in the middle of a
        response (a timeout, a lost connection, cancellation) must not leave the
        next one waiting for the rest of it."""
        self._unread: ContentLeft | None = None
        """The content of a multi-line response under way, unread (see :meth:`_drain`)."""
        self._owed: deque[ContentLeft] = deque()
        """The content of each answer owed to pipelined multi-line commands, oldest first
        (see :meth:`_drain`)."""
        self._peer_closed = False
        self._sizes: dict[int, int] = {}
        """Each message's size as the last LIST gave it: numbers and sizes hold for
        the session (RFC 1939 §5, the maildrop is locked)."""

    @property
    def capabilities(self) -> dict[str, tuple[str, ...]]:
        """What the server's last CAPA answer listed (empty if it has no CAPA)."""
        return dict(self.connection.capabilities or {})

    @property
    def tls(self) -> bool:
        """Whether the session is protected by TLS."""
        return self._conn is not None and self._conn.tls

    # -- session ------------------------------------------------------------

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
        await self._write(self._send(Quit()))

    async def _capa(self) -> None:
        await self._ask(Capa())
        await self._drain()

    async def _stls(self) -> None:
        await self._command(Stls())
        await self._handshake()
        self.connection.tls_started()
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
        :class:`POP3ProtocolError` when the server fails to prove itself (SCRAM).
        A server that logs the client in all the same (``+OK`` without a valid
        proof, or after the client's ``*``) may be an impostor, and the exchange is
        unsuccessful (RFC 5802 §5): the connection is closed, and a later call raises
        :class:`POP3ConnectionError`. One that refuses (``-ERR``) leaves the session
        where it was, not logged in.
        A mechanism that shows a reusable secret (PLAIN, LOGIN, a bearer token) on a
        session without TLS is :class:`POP3AuthenticationNotAvailable`, before
        anything is sent, unless ``allow_plaintext_auth`` (RFC 2595 §6).
        """
        if mechanism.requires_tls:
            self._refuse_without_tls(mechanism.name, tls=self.connection.tls)
        flow = ClientAuth(mechanism)
        response = await self._ask(flow.start())
        try:
            while isinstance(response, Continue):
                # After a "*" (the mechanism refused a challenge) respond() raises:
                # the server's answer to the cancel ends the exchange (RFC 5034 §4).
                await self._write(self._send(flow.respond(response)))
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

    @one_call
    async def quit(self) -> None:
        """Say QUIT and close. In TRANSACTION this commits the deletions (RFC 1939 §6):
        :class:`POP3ResponseError` if the server could not remove them all."""
        conn = self._conn
        try:
            open_states = (State.AUTHORIZATION, State.USER, State.TRANSACTION)
            if conn is not None and self._transport is not None and conn.state in open_states:
                await self._drain()
                await self._command(Quit())
        finally:
            await self._abort()

    # -- the transaction -------------------------------------------------------

    @one_call
    async def stat(self) -> tuple[int, int]:
        """``(count, size)`` of the maildrop, messages marked deleted left out."""
        response = await self._command(Stat())
        return _parse(parse_stat, response.text)

    @one_call
    async def list(self, *, allow_repeated_uids: bool = False) -> list[MessageListing]:
        """Every message not marked deleted, with its size and (if offered) unique-id.

        With PIPELINING, LIST and UIDL go out together. A unique-id given to two
        messages breaks RFC 1939 §7 and is a :class:`POP3ProtocolError`, unless
        ``allow_repeated_uids``: each message it was given to is then listed with
        ``uid=None`` and the id in ``repeated_uid``, the others as usual, and the
        session goes on. A message listed twice is refused either way.
        """
        conn = self.connection
        with_uids = conn.capabilities is None or "UIDL" in conn.capabilities
        if with_uids and conn.pipelining:
            await self._drain()
            await self._write(self._send(List()) + self._send(Uidl()))
            self._owed.append(listing_bound())  # UIDL's answer, behind LIST's
            response = await self._status(self.timeouts.response)
            if isinstance(response, Err):
                await self._drain()  # UIDL's answer must not pass for the next one's
                raise POP3ResponseError("LIST", response)
            sizes = _parse(parse_listing, await self._collect(listing_bound()))
            self._owed.popleft()
            uids = await self._uids(allow_repeated_uids)
        else:
            await self._command(List())
            sizes = _parse(parse_listing, await self._collect())
            uids = None
            if with_uids:
                await self._drain()
                await self._write(self._send(Uidl()))
                uids = await self._uids(allow_repeated_uids)
        self._sizes = dict(sizes)
        return _listed(sizes, uids or {})

    async def _uids(self, allow_repeated_uids: bool) -> dict[int, str] | None:
        response = await self._status(self.timeouts.response)
        if isinstance(response, Err):
            return None
        parser = functools.partial(parse_uid_listing, allow_repeated_uids=allow_repeated_uids)
        return dict(_parse(parser, await self._collect(listing_bound())))

    def retrieve_chunks(
        self, number: int, *, max_size: MaxSize = "listed"
    ) -> AsyncIterator[bytes]:
        """Message ``number`` in chunks as they arrive, dot-stuffing removed: the way
        to fetch one too large to hold whole.

        ``max_size`` bounds it in octets: by default, the size :meth:`list` gave and
        10% and 64 KiB more (no bound if it was not asked); ``None``, no bound. Past
        it, :class:`POP3ProtocolError`, and the connection is closed rather than read
        on.
        Leaving the loop early is allowed: the rest is read and dropped before
        the next command, within the same bound (64 MiB where the default gives
        none) and one ``response`` timeout in all.
        """
        content = self._bound(number, max_size, held=False)
        return self._held(self._retrieve_chunks(number, content))

    async def _retrieve_chunks(self, number: int, content: ContentLeft) -> AsyncIterator[bytes]:
        await self._command(Retr(number), content=content)
        async for chunk in self._stream():
            yield chunk

    @one_call
    async def retrieve(self, number: int, *, max_size: MaxSize = "listed") -> bytes:
        """Message ``number`` whole.

        ``max_size`` bounds it in octets, so that a server cannot fill memory with a
        message it said was small: by default, the size :meth:`list` gave and 10% and
        64 KiB more (for a server that counts line ends as LF alone; RFC 1939 §5 asks
        for the exact size), or 64 MiB if :meth:`list` was not asked; ``None``, no
        bound. Past it, :class:`POP3ProtocolError`, and the connection is closed
        rather than read on.
        """
        await self._command(Retr(number), content=self._bound(number, max_size, held=True))
        return await self._collect()

    def retrieve_many(
        self, numbers: Iterable[int], *, max_size: MaxSize = "listed"
    ) -> AsyncIterator[tuple[int, bytes]]:
        """``(number, message)`` for each of ``numbers``, in order.

        With PIPELINING up to 8 RETR commands are in flight at once, so a
        mailbox of small messages costs one round trip, not one per message.
        A message the server refuses raises :class:`POP3ResponseError`; one
        past ``max_size``, :class:`POP3ProtocolError` (see :meth:`retrieve`).
        Leaving the loop early is allowed: the answers still owed are read and
        dropped before the next command, each within its bound and one
        ``response`` timeout of its own in all.
        """
        return self._held(self._retrieve_many(numbers, checked_max_size(max_size)))

    async def _retrieve_many(
        self, numbers: Iterable[int], max_size: MaxSize
    ) -> AsyncIterator[tuple[int, bytes]]:
        conn = self.connection
        await self._drain()
        pending = iter(numbers)
        window = _WINDOW if conn.pipelining else 1
        in_flight: deque[int] = deque()
        while True:
            batch: list[bytes] = []
            bounds: list[ContentLeft] = []
            # Refill when half the window is answered: fewer, fuller writes.
            while len(in_flight) < window and (batch or len(in_flight) <= window // 2):
                number = next(pending, None)
                if number is None:
                    break
                batch.append(self._send(Retr(number)))
                bounds.append(self._bound(number, max_size, held=True))
                in_flight.append(number)
            if batch:
                await self._write(b"".join(batch))
                self._owed.extend(bounds)
            if not in_flight:
                return
            number = in_flight.popleft()
            content = self._owed.popleft()
            response = await self._status(self.timeouts.response)
            if isinstance(response, Err):
                await self._drain()  # the answers to the RETRs behind it
                raise POP3ResponseError(f"RETR {number}", response)
            yield number, await self._collect(content)

    @one_call
    async def top(self, number: int, lines: int, *, max_size: MaxSize = "listed") -> bytes:
        """The header of message ``number`` and its first ``lines`` body lines, within
        ``max_size`` octets as :meth:`retrieve` says (the whole message's bound: no
        more than the message can come)."""
        content = self._bound(number, max_size, held=True, top=True)
        await self._command(Top(number, lines), content=content)
        return await self._collect()

    @one_call
    async def uid(self, number: int) -> str:
        """The unique-id of message ``number``."""
        response = await self._command(Uidl(number))
        listing = _parse(parse_uid_listing, response.text)
        if len(listing) != 1 or listing[0][0] != number:
            raise POP3ProtocolError(f"not the unique-id of message {number}: {response.text!r}")
        return listing[0][1]

    @one_call
    async def delete(self, number: int) -> None:
        """Mark message ``number`` deleted; it goes when :meth:`quit` ends the session."""
        await self._command(Dele(number))

    @one_call
    async def reset(self) -> None:
        """Unmark every message marked deleted (RSET)."""
        await self._command(Rset())

    @one_call
    async def noop(self) -> None:
        """NOOP: keeps the session from the server's autologout timer."""
        await self._command(Noop())

    # -- I/O ------------------------------------------------------------------


_R = TypeVar("_R")


def _listed(sizes: Iterable[tuple[int, int]], uids: dict[int, str]) -> list[MessageListing]:
    """The messages LIST gave, each with the unique-id UIDL gave it, or, where UIDL gave
    that id to several messages, with none and the id as ``repeated_uid``."""
    given = Counter(uids.values())
    listing = []
    for number, size in sizes:
        uid = uids.get(number)
        if uid is not None and given[uid] > 1:
            listing.append(MessageListing(number, size, None, repeated_uid=uid))
        else:
            listing.append(MessageListing(number, size, uid))
    return listing


def _parse(parser: Callable[[Any], _R], text: bytes | str) -> _R:
    """A listing parsed, its errors turned into the client's."""
    try:
        return parser(text)
    except RemoteProtocolError as exc:
        raise POP3ProtocolError(str(exc)) from exc
