"""REQUIRETLS (RFC 8689): a message that may travel only over verified TLS.

Offered only in a session that runs over TLS (§4.1); a ``MAIL`` with the bare
``REQUIRETLS`` parameter asks every hop to keep to TLS with a verified
certificate or give the message back (5.7.30, §5). The machine reads the
parameter; honouring it when relaying is the application's.
"""

from __future__ import annotations

from typing import Final, Literal

from smtpcore.smtp._extension import TLS, Extension, Parameter, ParameterError

__all__ = ["REQUIRETLS"]


def _parse(value: str | None) -> Literal[True]:
    if value is not None:
        raise ParameterError("REQUIRETLS takes no value")
    return True


def _format(value: Literal[True]) -> None:
    return None


REQUIRETLS: Final = Extension(
    "REQUIRETLS",
    "RFC 8689",
    "the message may travel only over TLS with a verified certificate",
    option="requiretls",
    line_allowance=len(" REQUIRETLS"),
    mail_parameters=(Parameter("REQUIRETLS", _parse, _format, takes_utf8=False),),  # no value
    requires=(TLS,),
)
