"""8BITMIME (RFC 6152): content with octets over 127, declared with ``BODY=``.

BODY belongs here; its BINARYMIME value (RFC 3030 §3) needs the BINARYMIME
entry in force too, on both sides.
"""

from __future__ import annotations

import enum
from typing import Final

from smtpcore._words import ascii_upper
from smtpcore.smtp._extension import Extension, Parameter, ParameterError, ServerFacts
from smtpcore.smtp._replies import EnhancedStatus, Reply

__all__ = ["EIGHTBITMIME", "Body"]


class Body(enum.Enum):
    """The ``BODY=`` types: 7BIT and 8BITMIME (RFC 6152 §2), BINARYMIME (RFC 3030 §3)."""

    SEVEN_BIT = "7BIT"
    EIGHT_BIT_MIME = "8BITMIME"
    BINARYMIME = "BINARYMIME"

    def to_parameter(self) -> str:
        return self.value


_BAD_BODY: Final = Reply(501, "BODY must be 7BIT or 8BITMIME", EnhancedStatus(5, 5, 4))


_BODIES: Final = {body.value: body for body in Body}
"""Wire value -> type: a dict lookup, where ``Body(value)`` runs Enum's Python code."""


def _parse(value: str | None) -> Body:
    body = _BODIES.get(ascii_upper(value or ""))
    if body is None:
        raise ParameterError("BODY must be 7BIT or 8BITMIME", _BAD_BODY)
    return body


def _format(body: Body) -> str:
    return body.value


_BINARYMIME: Final = Body.BINARYMIME
"""A global: read through the enum class, a member costs the class's __getattr__ hook."""


def _binary_in_force(facts: ServerFacts, body: Body) -> Reply | None:
    if body is _BINARYMIME and not facts.in_force("BINARYMIME"):
        return _BAD_BODY
    return None


def _read(facts: ServerFacts, value: str | None) -> Reply | None:
    """``_parse``, then ``_binary_in_force``, in one call: most MAIL commands have BODY."""
    body = _BODIES.get(ascii_upper(value or ""))
    if body is None or (body is _BINARYMIME and not facts.in_force("BINARYMIME")):
        return _BAD_BODY
    return None


def _needs(body: Body) -> str:
    return "BINARYMIME" if body is Body.BINARYMIME else "8BITMIME"


EIGHTBITMIME: Final = Extension(
    "8BITMIME",
    "RFC 6152",
    "content may hold octets over 127 (BODY=8BITMIME)",
    option="eight_bit_mime",
    line_allowance=len(" BODY=BINARYMIME"),
    mail_parameters=(
        Parameter(
            "BODY",
            _parse,
            _format,
            check=_binary_in_force,
            needs=_needs,
            read=_read,
            takes_utf8=False,  # a keyword (RFC 6152 §2, RFC 3030 §3)
        ),
    ),
)
