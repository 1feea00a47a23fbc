"""DSN (RFC 3461, RFC 6533): delivery status notifications the sender asks for.

The values are typed in ``smtp/_dsn.py``: :class:`Ret`, :class:`EnvelopeId`,
:class:`Notify` and :class:`OriginalRecipient`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from typing import Final, Protocol, TypeVar

from smtpcore._words import ascii_upper
from smtpcore.smtp._dsn import (
    _NOTIFY_VALUES,
    _RETS,
    MAX_ORCPT,
    DSNError,
    EnvelopeId,
    Notify,
    OriginalRecipient,
    Ret,
)
from smtpcore.smtp._extension import Extension, Parameter, ParameterError, ServerFacts
from smtpcore.smtp._replies import Reply

__all__ = ["DSN"]


class _Value(Protocol):
    def to_parameter(self) -> str: ...


T = TypeVar("T", bound=_Value)


def _reader(
    keyword: str,
    read: Callable[[str], T],
    known: Collection[str] | None = None,
    *,
    takes_utf8: bool = False,
) -> Parameter[T]:
    """The parameter ``keyword``, its value read by ``read``. ``known``: the values
    ``read`` takes, upper-cased (each of them, and nothing else, whatever its case),
    which a server then accepts with one lookup. ``takes_utf8``: its grammar has room
    for UTF-8 (ORCPT's, RFC 6533 §3); RET's and NOTIFY's keywords and ENVID's xtext
    (RFC 3461 §4, which RFC 6533 leaves as it is) have none."""

    def parse(value: str | None) -> T:
        if value is None:
            raise ParameterError(f"{keyword} needs a value")
        try:
            return read(value)
        except DSNError as exc:
            raise ParameterError(str(exc)) from None

    def format(value: T) -> str:
        return value.to_parameter()

    parameter = Parameter(keyword, parse, format, takes_utf8=takes_utf8)
    if known is None:
        return parameter

    def read_known(facts: ServerFacts, value: str | None) -> Reply | None:
        if value is not None and ascii_upper(value) in known:
            return None
        return parameter.refusal(facts, value)  # which words the refusal

    return dataclasses.replace(parameter, read=read_known)


def _orcpt(value: str) -> OriginalRecipient:
    # Raw UTF-8 (utf-8-addr-unitext) makes a non-ASCII value, which both machines
    # allow only in an SMTPUTF8 transaction, as any such value (RFC 6533 §3).
    return OriginalRecipient.parse(value, utf8=True)


DSN: Final = Extension(
    "DSN",
    "RFC 3461, RFC 6533",
    "delivery status notifications: RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT",
    option="dsn",
    # The longest RCPT parameters: every NOTIFY event and a 500-character ORCPT
    # (RFC 3461 §4.2); RET and ENVID (at most 100, §4.4) make MAIL shorter.
    line_allowance=len(" NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=") + MAX_ORCPT,
    # In an SMTPUTF8 session those 500 characters may go raw (RFC 6533 §3), 4 octets each.
    utf8_line_allowance=3 * MAX_ORCPT,
    mail_parameters=(
        _reader("RET", Ret.parse, frozenset(_RETS)),
        _reader("ENVID", EnvelopeId.parse),
    ),
    rcpt_parameters=(
        _reader("NOTIFY", Notify.parse, frozenset(_NOTIFY_VALUES)),
        _reader("ORCPT", _orcpt, takes_utf8=True),
    ),
)
