"""The exceptions every smtpcore machine raises.

Modelled on h11: a ``LocalProtocolError`` means *this* side (the
application) tried something the protocol forbids, and the machine is left
unchanged; a ``RemoteProtocolError`` means the peer broke the protocol beyond
repair, and the machine moves to a sticky ERROR state.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError", "wrong_type"]


class ProtocolError(Exception):
    """Base class of every protocol error smtpcore raises.

    ``reply_hint`` is the event the application should send before it closes
    the connection (an SMTP ``Reply`` or a POP3 ``Err``), or ``None`` when
    there is nothing useful to say.
    """

    def __init__(self, message: str, *, reply_hint: Any = None) -> None:
        super().__init__(message)
        self.reply_hint: Any = reply_hint


class LocalProtocolError(ProtocolError):
    """The application asked for something the protocol does not allow."""

    result: Any = None
    """Set by the SMTP clients when a message split into several transactions for a
    server's LIMITS (RFC 9422 §4.2) raises this in one of them (content that changed
    between transactions, say): the ``TransactionResult`` of the transactions done
    and, unanswered, the recipients of the others, as a lost session's
    ``SMTPError.result`` has it, so that those delivered are not sent again."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the machine cannot recover from."""


def wrong_type(name: str, value: object, expected: str, *, hint: str = "") -> LocalProtocolError:
    """The error for a public constructor or helper given ``value`` of the wrong type:
    misuse is a ``LocalProtocolError`` (DESIGN.md), worded alike wherever it is found,
    never the ``TypeError`` or ``AttributeError`` the value would meet further in.
    ``hint`` says what to give instead, where a likely mistake is known."""
    message = f"{name} must be {expected}, not {type(value).__name__}"
    return LocalProtocolError(f"{message}: {hint}" if hint else message)
