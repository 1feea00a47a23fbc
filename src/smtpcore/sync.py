"""Blocking mail clients over a plain socket, for scripts and threads.

:class:`SMTPClient` is what smtplib's ``SMTP`` is, built on smtpcore's
client machine and on the very session code of the asyncio and trio
clients: the same pipelining, STARTTLS, AUTH, refusals raised as
:class:`SMTPError` subclasses, wire trace and timeouts, with no event loop::

    from smtpcore.sync import SMTPClient

    with SMTPClient("mx.pqr.example", 587, username="john", password="...") as client:
        client.send_message(message)

:class:`POP3Client` does the same for POP3, as poplib's ``POP3`` does. The
errors are the asyncio module's (they are one hierarchy for every client),
re-exported here.
"""

from __future__ import annotations

import email.message
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TypeVar

from smtpcore import pop3
from smtpcore._driver._blocking import open_link, run
from smtpcore._driver._client_base import BaseClient
from smtpcore._driver._content import Content
from smtpcore._driver._pop3_client import (
    BasePOP3Client,
    MessageListing,
    POP3AuthenticationError,
    POP3AuthenticationNotAvailable,
    POP3ClientOptions,
    POP3ConnectionError,
    POP3Error,
    POP3ProtocolError,
    POP3ResponseError,
    POP3Timeout,
    POP3TLSNotAvailable,
)
from smtpcore._driver._pop3_client_content import MaxSize
from smtpcore._driver._smtp_client import (
    AuthenticationError,
    AuthenticationNotAvailable,
    BaseSMTPClient,
    ExtensionNotOffered,
    HelloRefused,
    MessageRefused,
    MessageTooLarge,
    RecipientParameters,
    Recipients,
    RecipientsRefused,
    SenderRefused,
    SMTPClientOptions,
    SMTPConnectionError,
    SMTPError,
    SMTPProtocolError,
    SMTPReplyError,
    SMTPTimeout,
    TLSNotAvailable,
)
from smtpcore._driver._timeouts import POP3Timeouts, Timeouts, as_limit
from smtpcore._driver._transport import Link
from smtpcore.address import Mailbox
from smtpcore.sasl import ClientMechanism
from smtpcore.smtp import (
    ClientConnection,
    Command,
    RecipientResult,
    Reply,
    TransactionResult,
    Xclient,
    Xforward,
)
from smtpcore.smtp._params import ParametersLike

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "AuthenticationError",
    "AuthenticationNotAvailable",
    "ExtensionNotOffered",
    "HelloRefused",
    "MessageListing",
    "MessageRefused",
    "MessageTooLarge",
    "POP3AuthenticationError",
    "POP3AuthenticationNotAvailable",
    "POP3Client",
    "POP3ClientOptions",
    "POP3ConnectionError",
    "POP3Error",
    "POP3ProtocolError",
    "POP3ResponseError",
    "POP3TLSNotAvailable",
    "POP3Timeout",
    "POP3Timeouts",
    "RecipientsRefused",
    "SMTPClient",
    "SMTPClientOptions",
    "SMTPConnectionError",
    "SMTPError",
    "SMTPProtocolError",
    "SMTPReplyError",
    "SMTPTimeout",
    "SenderRefused",
    "TLSNotAvailable",
    "Timeouts",
    "send_message",
]

T = TypeVar("T")


class _BlockingSession(BaseClient):
    """An async client session whose waits block the thread (a plain socket)."""

    async def _open(self, host: str, port: int) -> Link:
        return open_link(host, port, self.timeouts.connect, self._unix_path)


class _SMTPSession(_BlockingSession, BaseSMTPClient):
    pass


class _POP3Session(_BlockingSession, BasePOP3Client):
    pass


def _uniform(timeout: float, given: object, uniform: Callable[[float | None], T]) -> T:
    """``timeouts`` made of smtplib's and poplib's one ``timeout`` for every wait,
    checked first (:func:`as_limit`: infinity is no limit), so that an error names
    ``timeout``, the keyword given, not a field of the timeouts built from it."""
    if given is not None:
        raise ValueError("give timeout (one for every wait) or timeouts, not both")
    return uniform(as_limit("timeout", timeout))


class _Client(Protocol):
    def connect(self) -> None: ...

    @property
    def _session(self) -> BaseClient: ...


_C = TypeVar("_C", bound=_Client)


class _WithBlock:
    """``with client:`` connects; leaving the block ends the session as the async
    clients' ``async with`` does (the session's own ``__aexit__``): QUIT, or after
    an exception what the protocol calls for (see :class:`SMTPClient` and
    :class:`POP3Client`)."""

    def __enter__(self: _C) -> _C:
        self.connect()
        return self

    def __exit__(
        self: _Client,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run(self._session.__aexit__(exc_type, exc, tb))


class SMTPClient(_WithBlock):
    """A blocking SMTP (or LMTP) client session to ``host``.

    ``with SMTPClient(host, port, ...) as client:`` connects, reads the
    greeting, says EHLO, starts TLS when offered and authenticates when
    given credentials; leaving the block says QUIT, after an exception too
    while the session can take it (RFC 5321 §4.1.1.10: after a refusal, say),
    and only closes where it cannot (mid-message, after a lost connection or a
    timeout). The keywords are those of the asyncio
    :class:`~smtpcore.asyncio.SMTPClient`; ``timeout`` is one limit in
    seconds for every wait (connecting, each reply, each write), as
    smtplib's, instead of the RFC 5321 §4.5.3.2 ``timeouts``.

    Every method blocks the calling thread. One client is one session:
    use it from one thread at a time.
    """

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[SMTPClientOptions],
    ) -> None:
        if timeout is not None:
            options["timeouts"] = _uniform(timeout, options.get("timeouts"), Timeouts.uniform)
        self._session = _SMTPSession(host, port, **options)

    @classmethod
    def over_unix_socket(
        cls,
        path: str | os.PathLike[str],
        host: str = "localhost",
        *,
        timeout: float | None = None,
        **options: Unpack[SMTPClientOptions],
    ) -> SMTPClient:
        """A client that connects to the Unix socket ``path`` (LMTP to a delivery agent,
        say) instead of ``host``, which names the server in TLS and in errors; the
        keywords are the constructor's."""
        client = cls(host, None, timeout=timeout, **options)
        client._session._unix_path = os.fspath(path)
        return client

    @property
    def host(self) -> str:
        """The server's host name or address."""
        return self._session.host

    @property
    def port(self) -> int:
        """The server's port (25 by default, 465 with ``tls_on_connect``, 24 with
        ``lmtp``: LMTP must not be used on TCP port 25, RFC 2033 §1)."""
        return self._session.port

    @property
    def connection(self) -> ClientConnection:
        """The machine of the open session (its ``extensions``, ``tls``, ``state``)."""
        return self._session.connection

    @property
    def unanswered_end(self) -> tuple[RecipientResult, ...]:
        """The recipients that the end of a message's content, sent with its reply
        not come, may have delivered to (RFC 5321 §6.1): after a ``KeyboardInterrupt``
        in :meth:`send_message`, those whose fate is unknown. Empty at any other
        moment."""
        return self._session.unanswered_end

    @property
    def authenticated_with(self) -> str | None:
        """The SASL mechanism the session authenticated with, once it has."""
        return self._session.authenticated_with

    @property
    def starttls_refused(self) -> Reply | None:
        """The reply that refused STARTTLS when ``starttls`` is None, after which the
        session went on in plaintext (RFC 3207 §4); None otherwise."""
        return self._session.starttls_refused

    @property
    def ehlo_refused(self) -> Reply | None:
        """The reply that refused EHLO (a ``4xx`` or a ``5xx``) when the session went
        on after HELO, with no extension, kept after QUIT until the next ``connect()``;
        None when EHLO was taken (an ``ehlo()`` too), or not sent (LMTP). A ``4xx`` says
        the refusal was temporary: what the session lacks may be offered later."""
        return self._session.ehlo_refused

    @property
    def is_connected(self) -> bool:
        """Whether the connection is open and the session can go on: a refusal leaves
        it true, and an error after which the client closed the connection (a lost
        connection, a timeout, an AUTH it cannot accept, a ``421``) makes it false; see the
        asyncio client's ``is_connected``."""
        return self._session.is_connected

    def channel_bindings(self) -> dict[str, bytes]:
        """The channel binding data of the connection's TLS layer, by type, as the async
        clients' ``channel_bindings()``: empty here, since the standard library's
        :mod:`ssl` cannot export keying material (RFC 9266)."""
        return self._session.channel_bindings()

    def connect(self) -> None:
        """Connect, read the greeting, say EHLO, start TLS and authenticate as
        configured; the connection is closed on every error."""
        run(self._session.connect())

    def send_message(
        self,
        message: Content | email.message.Message,
        sender: str | Mailbox | None = None,
        recipients: Recipients | None = None,
        *,
        mail_params: ParametersLike = None,
        rcpt_params: RecipientParameters = None,
        xforward: Xforward | None = None,
        on_batch: Callable[[TransactionResult], None] | None = None,
        resend_too_many: bool = False,
    ) -> TransactionResult:
        """Send one message; returns each recipient's fate (see the asyncio client's
        :meth:`~smtpcore.asyncio.SMTPClient.send_message` for the options and errors;
        ``on_batch`` is a plain function here, called as each transaction ends)."""
        return run(
            self._session.send_message(
                message,
                sender,
                recipients,
                mail_params=mail_params,
                rcpt_params=rcpt_params,
                xforward=xforward,
                # The usual None falls through, one jump fewer than `None if ...`.
                on_batch=_awaitable(on_batch) if on_batch is not None else None,
                resend_too_many=resend_too_many,
            )
        )

    def ehlo(self, hostname: str | None = None) -> Reply:
        """Say EHLO again (LHLO in LMTP); returns the reply, whose extensions
        ``connection.extensions`` now lists."""
        return run(self._session.ehlo(hostname))

    def noop(self) -> Reply:
        """NOOP; :class:`SMTPReplyError` unless the server answers 250."""
        return run(self._session.noop())

    def rset(self) -> Reply:
        """RSET: abandon the mail transaction under way, if any."""
        return run(self._session.rset())

    def verify(self, address: str) -> Reply:
        """VRFY: the 250, 251 or 252 reply; :class:`SMTPReplyError` for any other."""
        return run(self._session.verify(address))

    def command(self, command: Command) -> Reply:
        """Send any command event (``Help()``, ``Expn("staff")``) and return its reply,
        whatever its code (only a 421 raises)."""
        return run(self._session.command(command))

    def starttls(self) -> None:
        """STARTTLS, the handshake and EHLO again (for a client made with
        ``starttls=False``, or one that wants TLS on its own terms)."""
        run(self._session.starttls())

    def xclient(self, attributes: Xclient) -> Reply:
        """XCLIENT (Postfix): speak for the client ``attributes`` names, then EHLO again;
        returns the server's new greeting (see the asyncio client's
        :meth:`~smtpcore.asyncio.SMTPClient.xclient`)."""
        return run(self._session.xclient(attributes))

    def login(self, username: str, password: str) -> None:
        """AUTH with a password, by the strongest mechanism both sides have."""
        run(self._session.login(username, password))

    def authenticate(self, mechanism: ClientMechanism) -> None:
        """AUTH with a ready SASL mechanism (see :mod:`smtpcore.sasl`)."""
        run(self._session.authenticate(mechanism))

    def quit(self) -> None:
        """Say QUIT and close; a server that is already gone is not an error."""
        run(self._session.quit())

    def close(self) -> None:
        """Close the connection without QUIT."""
        run(self._session.close())


def send_message(
    message: Content | email.message.Message,
    sender: str | Mailbox | None = None,
    recipients: Recipients | None = None,
    *,
    host: str,
    port: int | None = None,
    mail_params: ParametersLike = None,
    rcpt_params: RecipientParameters = None,
    xforward: Xforward | None = None,
    on_batch: Callable[[TransactionResult], None] | None = None,
    resend_too_many: bool = False,
    timeout: float | None = None,
    **options: Unpack[SMTPClientOptions],
) -> TransactionResult:
    """Connect, send one message, say QUIT; returns each recipient's fate.

    ``mail_params``, ``rcpt_params``, ``xforward``, ``on_batch`` (a plain function) and
    ``resend_too_many`` are those of :meth:`SMTPClient.send_message`; the other
    keywords are :class:`SMTPClient`'s.
    """
    with SMTPClient(host, port, timeout=timeout, **options) as client:
        return client.send_message(
            message,
            sender,
            recipients,
            mail_params=mail_params,
            rcpt_params=rcpt_params,
            xforward=xforward,
            on_batch=on_batch,
            resend_too_many=resend_too_many,
        )


def _awaitable(call: Callable[[T], None]) -> Callable[[T], Awaitable[None]]:
    """``call`` as the session awaits it (a blocking session's waits block)."""

    async def awaited(value: T) -> None:
        call(value)

    return awaited


def _each(items: AsyncIterator[T]) -> Iterator[T]:
    """A blocking iterator over an async one whose waits block the thread."""
    while True:
        try:
            yield run(_anext(items))
        except StopAsyncIteration:
            return


async def _anext(chunks: AsyncIterator[T]) -> T:
    return await chunks.__anext__()


class POP3Client(_WithBlock):
    """A blocking POP3 client session, as poplib's ``POP3``.

    ``with POP3Client(host, ...) as client:`` connects, reads the greeting,
    asks CAPA and starts TLS (STLS) when offered; leaving the block says
    QUIT, which removes the messages marked deleted (RFC 1939 §6), or, after
    an exception, only closes, so that nothing is removed after a failure. The
    keywords are those of the asyncio :class:`~smtpcore.asyncio.POP3Client`,
    and ``timeout``, one limit in seconds for every wait.
    """

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[POP3ClientOptions],
    ) -> None:
        if timeout is not None:
            options["timeouts"] = _uniform(timeout, options.get("timeouts"), POP3Timeouts.uniform)
        self._session = _POP3Session(host, port, **options)

    @classmethod
    def over_unix_socket(
        cls,
        path: str | os.PathLike[str],
        host: str = "localhost",
        *,
        timeout: float | None = None,
        **options: Unpack[POP3ClientOptions],
    ) -> POP3Client:
        """A client that connects to the Unix socket ``path`` instead of ``host``, which
        names the server in TLS and in errors; the keywords are the constructor's."""
        client = cls(host, None, timeout=timeout, **options)
        client._session._unix_path = os.fspath(path)
        return client

    @property
    def host(self) -> str:
        """The server's host name or address."""
        return self._session.host

    @property
    def port(self) -> int:
        """The server's port (110 by default, 995 with ``tls_on_connect``)."""
        return self._session.port

    @property
    def connection(self) -> pop3.ClientConnection:
        """The machine of the open session (its ``capabilities``, ``state``, the
        greeting's ``apop_timestamp``)."""
        return self._session.connection

    @property
    def capabilities(self) -> dict[str, tuple[str, ...]]:
        """What the server's last CAPA answer listed."""
        return self._session.capabilities

    @property
    def tls(self) -> bool:
        """Whether the session is protected by TLS."""
        return self._session.tls

    @property
    def is_connected(self) -> bool:
        """Whether the connection is open and the session can go on: a refusal leaves
        it true, and an error after which the client closed the connection (a lost
        connection, a timeout, an AUTH it cannot accept) makes it false; see the
        asyncio client's ``is_connected``."""
        return self._session.is_connected

    def channel_bindings(self) -> dict[str, bytes]:
        """The channel binding data of the connection's TLS layer, by type, as the async
        clients' ``channel_bindings()``: empty here, since the standard library's
        :mod:`ssl` cannot export keying material (RFC 9266)."""
        return self._session.channel_bindings()

    def connect(self) -> None:
        """Connect, read the greeting, ask CAPA and start TLS as configured."""
        run(self._session.connect())

    def login(self, user: str, password: str, *, apop: bool = False) -> None:
        """USER and PASS, or APOP (RFC 1939 §7); :class:`POP3AuthenticationError`.
        USER/PASS without TLS is :class:`POP3AuthenticationNotAvailable` unless
        ``allow_plaintext_auth`` (RFC 2595 §2.2)."""
        run(self._session.login(user, password, apop=apop))

    def authenticate(self, mechanism: ClientMechanism) -> None:
        """AUTH with a SASL mechanism (RFC 5034)."""
        run(self._session.authenticate(mechanism))

    def utf8(self) -> None:
        """UTF8 (RFC 6856 §2): switch the session to UTF-8, before logging in.
        :class:`POP3Error` when the server does not list UTF8, :class:`POP3ResponseError`
        when it refuses."""
        run(self._session.utf8())

    def stat(self) -> tuple[int, int]:
        """``(count, size)`` of the maildrop."""
        return run(self._session.stat())

    def list(self, *, allow_repeated_uids: bool = False) -> list[MessageListing]:
        """Every message with its number, size and unique-id. A unique-id given to two
        messages (RFC 1939 §7 forbids it) is :class:`POP3ProtocolError`, unless
        ``allow_repeated_uids``: those messages are then listed with ``uid=None`` and
        the id in ``repeated_uid``."""
        return run(self._session.list(allow_repeated_uids=allow_repeated_uids))

    def retrieve(self, number: int, *, max_size: MaxSize = "listed") -> bytes:
        """Message ``number`` whole, dot-stuffing removed. ``max_size`` bounds it in
        octets: by default, the size :meth:`list` gave and 10% and 64 KiB more, or
        64 MiB if it was not asked; ``None``, no bound. Past it,
        :class:`POP3ProtocolError`, and the connection is closed."""
        return run(self._session.retrieve(number, max_size=max_size))

    def retrieve_chunks(self, number: int, *, max_size: MaxSize = "listed") -> Iterator[bytes]:
        """Message ``number`` in chunks as they arrive, dot-stuffing removed: a large
        message in bounded memory. ``max_size`` as for :meth:`retrieve`, except that
        by default a message :meth:`list` did not size has no bound. Leaving the loop
        early is allowed: the rest is read and dropped before the next command,
        within the same bound (64 MiB where the default gives none) and one
        ``timeout`` in all."""
        return _each(self._session.retrieve_chunks(number, max_size=max_size))

    def retrieve_many(
        self, numbers: Iterable[int], *, max_size: MaxSize = "listed"
    ) -> Iterator[tuple[int, bytes]]:
        """``(number, message)`` for each of ``numbers`` as they arrive, several RETR
        in flight when the server offers PIPELINING; ``max_size`` as for
        :meth:`retrieve`. Leaving the loop early is allowed: the answers still owed
        are read and dropped before the next command, each within its bound and one
        ``timeout`` of its own in all."""
        return _each(self._session.retrieve_many(numbers, max_size=max_size))

    def top(self, number: int, lines: int, *, max_size: MaxSize = "listed") -> bytes:
        """The header of message ``number`` and its first ``lines`` body lines, within
        ``max_size`` as for :meth:`retrieve`."""
        return run(self._session.top(number, lines, max_size=max_size))

    def uid(self, number: int) -> str:
        """The unique-id of message ``number`` (UIDL, RFC 1939 §7)."""
        return run(self._session.uid(number))

    def delete(self, number: int) -> None:
        """Mark message ``number`` deleted; it goes at QUIT."""
        run(self._session.delete(number))

    def reset(self) -> None:
        """Unmark every message marked deleted (RSET)."""
        run(self._session.reset())

    def noop(self) -> None:
        """NOOP: keeps the session from the server's autologout timer."""
        run(self._session.noop())

    def quit(self) -> None:
        """QUIT (committing the deletions) and close."""
        run(self._session.quit())

    def close(self) -> None:
        """Close without QUIT: nothing marked deleted is removed."""
        run(self._session.close())
