"""SMTP over asyncio: a server for a :class:`~smtpcore.handler.Handler`, and a client.

This module names the public API; the sessions themselves run in the driver
shared with :mod:`smtpcore.trio`, and the transport and the task plumbing live
in private modules beside it. The server's transport is a small
:class:`asyncio.BufferedProtocol` rather than asyncio streams: the event loop
reads into one buffer per thread, the driver gets the bytes read, and TLS
starts in place with :meth:`asyncio.loop.start_tls`. A client's TCP connection
is read and written on the socket itself until TLS starts: it waits for every
reply.
"""

from __future__ import annotations

import email.message
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from smtpcore._asyncio_client import _AsyncioClient
from smtpcore._asyncio_clock import AsyncioClock as AsyncioClock  # importable from here too
from smtpcore._asyncio_listener import _Listener
from smtpcore._asyncio_stream import StreamTransport as StreamTransport  # importable from here too
from smtpcore._asyncio_transport import AsyncioTransport
from smtpcore._driver import (
    BaseSMTPClient,
    BaseSMTPServer,
    ExtensionNotOffered,
    MessageRefused,
    RecipientsRefused,
    SenderRefused,
    ServerOptions,
    ServerSession,
    SMTPConnectionError,
    SMTPError,
    SMTPProtocolError,
    SMTPReplyError,
    SMTPTimeout,
    Timeouts,
    TLSNotAvailable,
)
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
from smtpcore._driver._pop3_server import BasePOP3Server, POP3ServerOptions, POP3ServerSession
from smtpcore._driver._smtp_client import (
    AuthenticationError,
    AuthenticationNotAvailable,
    HelloRefused,
    MessageTooLarge,
    RecipientParameters,
    Recipients,
    SMTPClientOptions,
)
from smtpcore._driver._timeouts import POP3Timeouts
from smtpcore.address import Mailbox
from smtpcore.handler import (
    Authenticator,
    AuthIdentity,
    Envelope,
    Handler,
    Recipient,
    Session,
    TLSInfo,
)
from smtpcore.maildrop import (
    Maildir,
    MaildirStore,
    Maildrop,
    MaildropError,
    MaildropInUse,
    Mailstore,
    MessageInfo,
    MessageUnavailable,
    POP3Session,
)
from smtpcore.smtp import TransactionResult, Xforward
from smtpcore.smtp._params import ParametersLike

if TYPE_CHECKING:
    from typing_extensions import Unpack

# This module names the public API; the parts live in private modules of one job each:
# _asyncio_listener (the servers' accept loop and shutdown), _asyncio_client (how the
# clients connect and read replies), _asyncio_transport (AsyncioTransport),
# _asyncio_stream (StreamTransport), _asyncio_beneath_tls (the TCP transport beneath
# asyncio's TLS), and, from before, _asyncio_raw and _asyncio_tls (the raw socket's
# connections), _asyncio_runner, _asyncio_clock, _asyncio_timers and _asyncio_alarm
# (running and timing sessions), _asyncio_client_socket and _asyncio_close (a client's
# TCP connection and its close).

__all__ = [
    "AuthIdentity",
    "AuthenticationError",
    "AuthenticationNotAvailable",
    "Authenticator",
    "ExtensionNotOffered",
    "HelloRefused",
    "MessageRefused",
    "MessageTooLarge",
    "RecipientsRefused",
    "SMTPClient",
    "SMTPConnectionError",
    "SMTPError",
    "SMTPProtocolError",
    "SMTPReplyError",
    "SMTPTimeout",
    "SenderRefused",
    "TLSNotAvailable",
    "send_message",
    "AsyncioTransport",
    "Envelope",
    "Handler",
    "Recipient",
    "SMTPServer",
    "Session",
    "TLSInfo",
    "Timeouts",
    "serve",
    "Maildir",
    "MaildirStore",
    "Maildrop",
    "MaildropError",
    "MaildropInUse",
    "Mailstore",
    "MessageInfo",
    "MessageListing",
    "MessageUnavailable",
    "POP3AuthenticationError",
    "POP3AuthenticationNotAvailable",
    "POP3Client",
    "POP3ConnectionError",
    "POP3Error",
    "POP3ProtocolError",
    "POP3ResponseError",
    "POP3Server",
    "POP3Session",
    "POP3TLSNotAvailable",
    "POP3Timeout",
    "POP3Timeouts",
    "serve_pop3",
    "ServerOptions",
    "POP3ServerOptions",
    "SMTPClientOptions",
    "POP3ClientOptions",
]


class SMTPServer(_Listener[ServerSession], BaseSMTPServer):
    """An SMTP server on asyncio; use as ``async with SMTPServer(handler, ...) as server:``.

    Leaving the block (or :meth:`aclose`) shuts down gracefully: the server
    stops listening, idle sessions get ``421 4.3.2`` at once, sessions in
    the middle of a message finish it first, and whatever is left after
    ``grace`` seconds is cut off.
    """


async def serve(
    handler: Handler,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    started: Callable[[SMTPServer], None] | None = None,
    **options: Any,
) -> None:
    """Serve until cancelled, then shut down gracefully.

    ``started`` is called with the server once it listens. The other
    keywords are :class:`SMTPServer`'s.
    """
    async with SMTPServer(handler, host, port, **options) as server:
        if started is not None:
            started(server)
        await server.serve_forever()


class SMTPClient(_AsyncioClient, BaseSMTPClient):
    """An SMTP client session on asyncio; ``async with SMTPClient(host) as client:``.

    Send several messages over one session with :meth:`send_message`; the
    keywords are those of :class:`SMTPClientOptions`.
    """

    async def __aenter__(self) -> SMTPClient:
        await self.connect()
        return self


async def send_message(
    message: Content | email.message.Message,
    sender: str | Mailbox | None = None,
    recipients: Recipients | None = None,
    *,
    host: str,
    port: int | None = None,
    mail_params: ParametersLike = None,
    rcpt_params: RecipientParameters = None,
    xforward: Xforward | None = None,
    on_batch: Callable[[TransactionResult], Awaitable[None]] | None = None,
    resend_too_many: bool = False,
    **options: Unpack[SMTPClientOptions],
) -> TransactionResult:
    """Connect, send one message, say QUIT; returns each recipient's fate.

    ``mail_params``, ``rcpt_params``, ``xforward``, ``on_batch`` and ``resend_too_many``
    are those of :meth:`SMTPClient.send_message
    <smtpcore.asyncio.SMTPClient.send_message>`, which says what is raised; the other
    keywords are :class:`SMTPClient`'s.
    """
    async with SMTPClient(host, port, **options) as client:
        return await client.send_message(
            message,
            sender,
            recipients,
            mail_params=mail_params,
            rcpt_params=rcpt_params,
            xforward=xforward,
            on_batch=on_batch,
            resend_too_many=resend_too_many,
        )


# -- POP3 -------------------------------------------------------------------------


class POP3Server(_Listener[POP3ServerSession], BasePOP3Server):
    """A POP3 server on asyncio; use as ``async with POP3Server(store, ...) as server:``.

    ``store`` is a :class:`~smtpcore.maildrop.Mailstore`, such as a
    :class:`~smtpcore.maildrop.MaildirStore`. Leaving the block (or
    :meth:`aclose`) shuts down gracefully: the server stops listening, idle
    sessions get ``-ERR [SYS/TEMP]`` at once and lose their marks (they did
    not say QUIT), a response being sent is finished first, and whatever is
    left after ``grace`` seconds is cut off.
    """


async def serve_pop3(
    store: Mailstore,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    started: Callable[[POP3Server], None] | None = None,
    **options: Any,
) -> None:
    """Serve POP3 until cancelled, then shut down gracefully.

    ``started`` is called with the server once it listens. The other
    keywords are :class:`POP3Server`'s.
    """
    async with POP3Server(store, host, port, **options) as server:
        if started is not None:
            started(server)
        await server.serve_forever()


class POP3Client(_AsyncioClient, BasePOP3Client):
    """A POP3 client session on asyncio; ``async with POP3Client(host) as client:``.

    The keywords are those of :class:`POP3ClientOptions`.
    """
