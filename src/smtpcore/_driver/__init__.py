"""The shared async driver behind :mod:`smtpcore.asyncio` and :mod:`smtpcore.trio`.

Everything here is written against :class:`Transport`; the adapters supply
one and the task plumbing, nothing else.
"""

from smtpcore._driver._smtp_client import (
    BaseSMTPClient,
    MessageRefused,
    RecipientsRefused,
    SenderRefused,
    SMTPConnectionError,
    SMTPError,
    SMTPProtocolError,
    SMTPReplyError,
    SMTPTimeout,
    TLSNotAvailable,
)
from smtpcore._driver._smtp_server import (
    BaseSMTPServer,
    ServerOptions,
    ServerSession,
    ServerState,
)
from smtpcore._driver._timeouts import Deadline, DeadlineFactory, Timeouts
from smtpcore._driver._transport import Transport, address, tls_info

__all__ = [
    "BaseSMTPClient",
    "BaseSMTPServer",
    "MessageRefused",
    "RecipientsRefused",
    "SMTPConnectionError",
    "SMTPError",
    "SMTPProtocolError",
    "SMTPReplyError",
    "SMTPTimeout",
    "SenderRefused",
    "TLSNotAvailable",
    "Deadline",
    "DeadlineFactory",
    "ServerOptions",
    "ServerSession",
    "ServerState",
    "Timeouts",
    "Transport",
    "address",
    "tls_info",
]
