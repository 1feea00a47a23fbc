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
from smtpcore.smtp._extension import Extension, Parameter, Readers, parameter_readers

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

_PARAMETERS: Final[dict[str, Readers]] = {
    "MAIL": parameter_readers(KNOWN, mail=True),
    "RCPT": parameter_readers(KNOWN, mail=False),
}
"""The known parameters of each command, from the entries, as the server reads them."""
_VERBS: Final[dict[str, Extension]] = {
    verb: extension for extension in KNOWN for verb in extension.verbs
}


def owner_of_parameter(
    keyword: str, verb: str | None = None
) -> tuple[Extension, Parameter[object]] | None:
    """The known extension a parameter of ``verb`` (``"MAIL"`` or ``"RCPT"``) belongs
    to, with its reader; of either command when ``verb`` is None (a keyword is one
    extension's, whichever command it is sent with)."""
    key = ascii_upper(keyword)
    if verb is not None:
        return _PARAMETERS[verb].get(key)
    return _PARAMETERS["MAIL"].get(key) or _PARAMETERS["RCPT"].get(key)


def owner_of_verb(verb: str) -> Extension | None:
    """The known extension a command exists only with (BDAT: CHUNKING), if any."""
    return _VERBS.get(ascii_upper(verb))
