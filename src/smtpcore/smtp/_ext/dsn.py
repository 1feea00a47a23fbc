"""DSN (RFC 3461, RFC 6533): delivery status notifications the sender asks for.

The values are typed in ``smtp/_dsn.py``: :class:`Ret`, :class:`EnvelopeId`,
:class:`Notify` and :class:`OriginalRecipient`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol, TypeVar

from smtpcore.smtp._dsn import MAX_ORCPT, DSNError, EnvelopeId, Notify, OriginalRecipient, Ret
from smtpcore.smtp._extension import Extension, Parameter, ParameterError

__all__ = ["DSN"]


class _Value(Protocol):
    def to_parameter(self) -> str: ...


T = TypeVar("T", bound=_Value)


def _reader(keyword: str, read: Callable[[str], T]) -> Parameter[T]:
    def parse(value: str | None) -> T:
        if value is None:
            raise ParameterError(f"{keyword} needs a value")
        try:
            return read(value)
        except DSNError as exc:
            raise ParameterError(str(exc)) from None

    def format(value: T) -> str:
        return value.to_parameter()

    return Parameter(keyword, parse, format)


def _orcpt(value: str) -> OriginalRecipient:
    # Raw UTF-8 (utf-8-addr-unitext) makes a non-ASCII value, which the server
    # machine allows only in an SMTPUTF8 transaction (RFC 6533 §3).
    return OriginalRecipient.parse(value, utf8=True)


DSN: Final = Extension(
    "DSN",
    "RFC 3461, RFC 6533",
    "delivery status notifications: RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT",
    option="dsn",
    # The longest RCPT parameters: every NOTIFY event and a 500-character ORCPT
    # (RFC 3461 §4.2); RET and ENVID (at most 100, §4.4) make MAIL shorter.
    line_allowance=len(" NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=") + MAX_ORCPT,
    mail_parameters=(_reader("RET", Ret.parse), _reader("ENVID", EnvelopeId.parse)),
    rcpt_parameters=(_reader("NOTIFY", Notify.parse), _reader("ORCPT", _orcpt)),
)
