"""The ESMTP extensions smtpcore knows, one entry per module, in EHLO order.

Adding an extension is adding a module here with its :class:`Extension`
entry, listing it below, and (when the server can offer it) a keyword option
of :class:`~smtpcore.smtp.ServerConnection` named as the entry's ``option``.
"""

from __future__ import annotations

from typing import Final

from smtpcore._words import ascii_upper
from smtpcore.smtp._ext.announced import DELIVERBY, FUTURERELEASE, MT_PRIORITY
from smtpcore.smtp._ext.auth import AUTH
from smtpcore.smtp._ext.binarymime import BINARYMIME
from smtpcore.smtp._ext.chunking import CHUNKING
from smtpcore.smtp._ext.dsn import DSN
from smtpcore.smtp._ext.eightbitmime import EIGHTBITMIME, Body
from smtpcore.smtp._ext.enhancedstatuscodes import ENHANCEDSTATUSCODES
from smtpcore.smtp._ext.limits import LIMITS, Limits
from smtpcore.smtp._ext.pipelining import PIPELINING
from smtpcore.smtp._ext.requiretls import REQUIRETLS
from smtpcore.smtp._ext.size import SIZE
from smtpcore.smtp._ext.smtputf8 import SMTPUTF8
from smtpcore.smtp._ext.starttls import STARTTLS
from smtpcore.smtp._ext.xclient import XCLIENT
from smtpcore.smtp._ext.xforward import XFORWARD
from smtpcore.smtp._extension import Extension, Parameter

__all__ = ["BUILTIN", "KNOWN", "Body", "Limits", "owner_of_parameter", "owner_of_verb"]

BUILTIN: Final[tuple[Extension, ...]] = (
    SIZE,
    EIGHTBITMIME,
    PIPELINING,
    ENHANCEDSTATUSCODES,
    SMTPUTF8,
    CHUNKING,
    BINARYMIME,
    DSN,
    STARTTLS,
    AUTH,
    LIMITS,
    REQUIRETLS,
    XCLIENT,
    XFORWARD,
)
"""What the server machine can offer, in the order its EHLO reply lists them."""

KNOWN: Final[tuple[Extension, ...]] = (*BUILTIN, MT_PRIORITY, DELIVERBY, FUTURERELEASE)
"""Every extension the client checks parameters and commands against."""

_PARAMETERS: Final[dict[str, tuple[Extension, Parameter[object]]]] = {
    parameter.keyword: (extension, parameter)
    for extension in KNOWN
    for parameter in (*extension.mail_parameters, *extension.rcpt_parameters)
}
_VERBS: Final[dict[str, Extension]] = {
    verb: extension for extension in KNOWN for verb in extension.verbs
}


def owner_of_parameter(keyword: str) -> tuple[Extension, Parameter[object]] | None:
    """The known extension a MAIL or RCPT parameter belongs to, with its reader."""
    return _PARAMETERS.get(ascii_upper(keyword))


def owner_of_verb(verb: str) -> Extension | None:
    """The known extension a command exists only with (BDAT: CHUNKING), if any."""
    return _VERBS.get(ascii_upper(verb))
