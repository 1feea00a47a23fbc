"""Extensions the client knows the parameters of but the server machine cannot offer.

A client must not use a parameter of an extension the server did not list
(RFC 5321 §2.2.2); these entries let it check that for MAIL parameters it is
given to pass on. Their values are read just enough to be passed on intact.
"""

from __future__ import annotations

import re
from typing import Final

from smtpcore.smtp._extension import Extension, Parameter, ParameterError

__all__ = ["DELIVERBY", "FUTURERELEASE", "MT_PRIORITY"]


def _matching(keyword: str, pattern: str) -> Parameter[str]:
    """The parameter ``keyword``, its value ASCII that ``pattern`` matches: digits,
    signs and letters, never UTF-8 (``takes_utf8``), SMTPUTF8 or not."""
    compiled = re.compile(pattern)

    def parse(value: str | None) -> str:
        if value is None or not compiled.fullmatch(value):
            raise ParameterError(f"malformed {keyword} value")
        return value

    return Parameter(keyword, parse, str, takes_utf8=False)


MT_PRIORITY: Final = Extension(
    "MT-PRIORITY",
    "RFC 6710",
    "a transfer priority from -9 to 9",
    mail_parameters=(_matching("MT-PRIORITY", r"[+-]?[0-9]"),),
)
DELIVERBY: Final = Extension(
    "DELIVERBY",
    "RFC 2852",
    "deliver by a time, or report or return",
    mail_parameters=(_matching("BY", r"[+-]?[0-9]{1,9};[NnRr][Tt]?"),),
)
FUTURERELEASE: Final = Extension(
    "FUTURERELEASE",
    "RFC 4865",
    "hold the message for a time or until a date",
    mail_parameters=(
        _matching("HOLDFOR", r"[0-9]{1,9}"),
        _matching("HOLDUNTIL", r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9:.]+(?:[Zz]|[+-][0-9:]+)"),
    ),
)
