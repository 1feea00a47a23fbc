"""The shared async driver behind :mod:`smtpcore.asyncio` and :mod:`smtpcore.trio`.

Everything here runs over a :class:`Link`: a :class:`~smtpcore.transport.Transport`
(the bytes) joined with the :class:`Clock` of the framework that runs the
session (the time). The adapters supply both and the task plumbing, nothing
else.
"""

from smtpcore._driver._pop3_client import (
    BasePOP3Client,
    MessageListing,
    POP3AuthenticationError,
    POP3AuthenticationNotAvailable,
    POP3ConnectionError,
    POP3Error,
    POP3ProtocolError,
    POP3ResponseError,
    POP3Timeout,
    POP3TLSNotAvailable,
)
from smtpcore._driver._pop3_server import (
    BasePOP3Server,
    POP3ServerOptions,
    POP3ServerSession,
    POP3ServerState,
)
from smtpcore._driver._smtp_client import (
    BaseSMTPClient,
    ExtensionNotOffered,
    HelloRefused,
    MessageRefused,
    MessageTooLarge,
    RecipientsRefused,
    SenderRefused,
    SMTPConnectionError,
    SMTPError,
    SMTPProtocolError,
    SMTPReplyError,
    SMTPTimeout,
    TLSNotAvailable,
    check_hello_name,
)
from smtpcore._driver._smtp_server import (
    BaseSMTPServer,
    ServerOptions,
    ServerSession,
    ServerState,
)
from smtpcore._driver._timeouts import (
    DEFAULT_POP3_TIMEOUTS,
    Clock,
    Deadline,
    DeadlineFactory,
    POP3Timeouts,
    Timeouts,
)
from smtpcore._driver._transport import BoundLink, Link, Transport, address, tls_info

__all__ = [
    "BasePOP3Client",
    "BasePOP3Server",
    "DEFAULT_POP3_TIMEOUTS",
    "MessageListing",
    "POP3AuthenticationError",
    "POP3AuthenticationNotAvailable",
    "POP3ConnectionError",
    "POP3Error",
    "POP3ProtocolError",
    "POP3ResponseError",
    "POP3ServerOptions",
    "POP3ServerSession",
    "POP3ServerState",
    "POP3TLSNotAvailable",
    "POP3Timeout",
    "POP3Timeouts",
    "BaseSMTPClient",
    "BaseSMTPServer",
    "HelloRefused",
    "MessageRefused",
    "MessageTooLarge",
    "RecipientsRefused",
    "SMTPConnectionError",
    "SMTPError",
    "SMTPProtocolError",
    "SMTPReplyError",
    "SMTPTimeout",
    "SenderRefused",
    "TLSNotAvailable",
    "Clock",
    "Deadline",
    "DeadlineFactory",
    "ExtensionNotOffered",
    "ServerOptions",
    "ServerSession",
    "ServerState",
    "BoundLink",
    "Link",
    "Timeouts",
    "Transport",
    "address",
    "check_hello_name",
    "tls_info",
]
