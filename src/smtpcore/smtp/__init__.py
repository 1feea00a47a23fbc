"""SMTP (RFC 5321) and LMTP (RFC 2033) as sans-I/O state machines."""

from smtpcore.smtp._auth import AuthenticationFailed, ClientAuth, ServerAuth
from smtpcore.smtp._base import Event
from smtpcore.smtp._client import ClientConnection
from smtpcore.smtp._dsn import (
    DSNError,
    EnvelopeId,
    Notify,
    OriginalRecipient,
    Ret,
    decode_xtext,
    xtext,
)
from smtpcore.smtp._events import (
    Auth,
    AuthResponse,
    BadCommand,
    Bdat,
    Command,
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
    Rset,
    StartTls,
    Vrfy,
    Xclient,
    Xforward,
)
from smtpcore.smtp._ext import Body, Limits
from smtpcore.smtp._extension import Extension, Parameter, ParameterError, Requirement
from smtpcore.smtp._extensions import ServerExtensions
from smtpcore.smtp._forwarding import TEMPUNAVAIL, UNAVAILABLE, Unavailable
from smtpcore.smtp._params import Parameters
from smtpcore.smtp._replies import EnhancedStatus, Reply, quoted
from smtpcore.smtp._server import ServerConnection
from smtpcore.smtp._state import State
from smtpcore.smtp._transaction import RecipientResult, TransactionResult

__all__ = [
    "Auth",
    "Body",
    "DSNError",
    "EnvelopeId",
    "Extension",
    "Notify",
    "OriginalRecipient",
    "Parameter",
    "ParameterError",
    "Requirement",
    "Ret",
    "AuthenticationFailed",
    "AuthResponse",
    "BadCommand",
    "Bdat",
    "ClientAuth",
    "ClientConnection",
    "Command",
    "ConnectionClosed",
    "Data",
    "Ehlo",
    "EndOfMessage",
    "EnhancedStatus",
    "Event",
    "Expn",
    "Helo",
    "Help",
    "Lhlo",
    "Limits",
    "Mail",
    "MessageData",
    "Noop",
    "Parameters",
    "Quit",
    "Rcpt",
    "RecipientResult",
    "RejectedMessage",
    "Reply",
    "Rset",
    "ServerAuth",
    "ServerConnection",
    "ServerExtensions",
    "StartTls",
    "State",
    "TransactionResult",
    "TEMPUNAVAIL",
    "UNAVAILABLE",
    "Unavailable",
    "Vrfy",
    "Xclient",
    "Xforward",
    "decode_xtext",
    "quoted",
    "xtext",
]
