"""SMTPUTF8 (RFC 6531): UTF-8 addresses in a transaction whose MAIL says so.

Offered only with 8BITMIME (RFC 6531 §3.1 item 8), as its entry says (``depends``).
"""

from __future__ import annotations

from typing import Final, Literal

from smtpcore.smtp._extension import Extension, Parameter, ParameterError, ServerFacts
from smtpcore.smtp._replies import EnhancedStatus, Reply

__all__ = ["SMTPUTF8"]

_TAKES_NO_VALUE: Final = Reply(555, "Unsupported parameter SMTPUTF8", EnhancedStatus(5, 5, 4))


def _parse(value: str | None) -> Literal[True]:
    """``SMTPUTF8`` has no value (RFC 6531 §3.4)."""
    if value is not None:
        raise ParameterError("SMTPUTF8 takes no value", _TAKES_NO_VALUE)
    return True


def _read(facts: ServerFacts, value: str | None) -> Reply | None:
    return None if value is None else _TAKES_NO_VALUE


def _format(value: Literal[True]) -> None:
    return None


SMTPUTF8: Final = Extension(
    "SMTPUTF8",
    "RFC 6531",
    "UTF-8 addresses and headers in a transaction whose MAIL has SMTPUTF8",
    option="smtputf8",
    line_allowance=10,  # RFC 6531 §3.1 item 5
    # RFC 6531 §3.1 item 8: "Servers offering this extension MUST provide support
    # for, and announce, the 8BITMIME extension": without it SMTPUTF8 is not offered.
    depends=("8BITMIME",),
    mail_parameters=(Parameter("SMTPUTF8", _parse, _format, read=_read, takes_utf8=False),),
)
