"""The ESMTP parameters real clients send, read and checked in a few lookups.

Most ``MAIL`` commands carry ``SIZE=`` and ``BODY=`` (Postfix, smtplib, Go's
net/smtp), some ``SMTPUTF8`` and the DSN parameters ``RET=`` and ``ENVID=``;
``RCPT`` carries ``NOTIFY=`` and ``ORCPT=`` (RFC 1870, RFC 6152, RFC 6531,
RFC 3461). A parameter is *everyday* when its value is one its extension
accepts as it stands (``SIZE`` but for the server's limit): ``SIZE=`` digits,
``BODY=7BIT`` or ``8BITMIME``, a bare ``SMTPUTF8``, a well-formed ``RET=`` or
``NOTIFY=``, an ``ENVID=`` or ``rfc822`` ``ORCPT=`` in xtext without escapes.
:attr:`Parameters._everyday <smtpcore.smtp.Parameters>` holds their keywords
as bits, and the server's check is then a comparison of bits with the
keywords of the extensions in force (:func:`everyday_bits`, once per server
configuration), where the general check reads each value through its entry.

Reading costs as little: the parameter texts made of fixed values (``
BODY=8BITMIME``, `` NOTIFY=NEVER``) are remembered, and a leading ``SIZE=``
is split off before the rest is looked up, so most commands are read with a
dict lookup or two. Anything else is read word by word, as before; the
general checks still word every refusal, and a property test holds the two
paths to the same answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from smtpcore.smtp._dsn import _NOTIFY_VALUES, MAX_ENVID, MAX_ORCPT
from smtpcore.smtp._extension import Extension, Parameter
from smtpcore.smtp._params import Parameters

__all__ = ["SIZE_BIT", "SMTPUTF8_BIT", "everyday_bits", "read_parameters"]

SIZE_BIT: Final = 1
"""Only when ``SIZE`` is the first parameter: the check reads its value there."""
BODY_BIT: Final = 2
SMTPUTF8_BIT: Final = 4
RET_BIT: Final = 8
ENVID_BIT: Final = 16
NOTIFY_BIT: Final = 32
ORCPT_BIT: Final = 64

# xtext (RFC 3461 §4) without the "+XX" escape: printable ASCII but "+" and "=".
_PLAIN_XTEXT: Final = "[!-*,-<>-~]"


def _values(pattern: str) -> Callable[[str | None], bool]:
    match = re.compile(pattern).fullmatch
    return lambda value: value is not None and match(value) is not None


_EVERYDAY: Final[dict[str, tuple[int, Callable[[str | None], bool]]]] = {
    "SIZE": (SIZE_BIT, _values("[0-9]{1,20}")),  # RFC 1870 §3
    "BODY": (BODY_BIT, _values("(?i:7BIT|8BITMIME)")),  # RFC 6152 §2 (not BINARYMIME)
    "SMTPUTF8": (SMTPUTF8_BIT, lambda value: value is None),  # RFC 6531 §3.4
    "RET": (RET_BIT, _values("(?i:FULL|HDRS)")),  # RFC 3461 §4.3
    "ENVID": (ENVID_BIT, _values(f"{_PLAIN_XTEXT}{{1,{MAX_ENVID}}}")),  # §4.4
    "NOTIFY": (NOTIFY_BIT, lambda value: value is not None and value.upper() in _NOTIFY_VALUES),
    # RFC 3461 §4.2: an ASCII address, at most 500 characters in all.
    "ORCPT": (ORCPT_BIT, _values(f"(?i:rfc822);{_PLAIN_XTEXT}{{1,{MAX_ORCPT - 7}}}")),
}
"""Keyword -> its bit, and whether a value is one its extension takes as it stands."""

_VARYING: Final = SIZE_BIT | ENVID_BIT | ORCPT_BIT
"""Parameters whose values change from message to message: a text holding one is
not remembered (a leading SIZE is split off instead)."""

_PARAMETERS: Final = re.compile(rb"(?: [A-Za-z0-9][A-Za-z0-9-]*(?:=[\x21-\x3c\x3e-\x7e]+)?)+")
"""ESMTP parameters in ASCII, one space before each (RFC 5321 §4.1.2 ``esmtp-param``)."""

_KNOWN: Final[dict[bytes, Parameters]] = {}
"""Parameter texts of fixed everyday values read so far, and their parameters
(immutable, so shared): none holds SIZE, ENVID or ORCPT."""
_KNOWN_COUNT: Final = 256
"""Texts kept at most; a full table starts over."""
_KNOWN_LENGTH: Final = 128
"""Longest text kept."""
_SIZE: Final = b" SIZE="


def read_parameters(size: bytes | None, text: bytes | None) -> Parameters | None:
    """The parameters of a ``MAIL`` or ``RCPT`` line: the digits of a leading
    ``SIZE=``, if any, and the text after it (a space before each parameter). None
    when the text is not ``esmtp-param``s in ASCII or names a keyword twice (the
    full parser then words the refusal)."""
    if size is None:
        assert text is not None
        known = _KNOWN.get(text)
        return _read_words(text) if known is None else known
    if not text:
        rest = _NONE
    else:
        known = _KNOWN.get(text)
        if known is None:
            _read_words(text)  # learnt, if of fixed everyday values
            known = _KNOWN.get(text)
            if known is None:  # read otherwise: with its SIZE, as a whole
                return _read_words(_SIZE + size + text)
        rest = known
    params: Parameters = _new(Parameters)
    params._items = (("SIZE", size.decode("ascii")), *rest._items)
    params._everyday = SIZE_BIT | rest._everyday
    return params


def _read_words(text: bytes) -> Parameters | None:
    """:func:`read_parameters` word by word, remembering a text of fixed everyday
    values."""
    if _PARAMETERS.fullmatch(text) is None:
        return None
    params = Parameters.from_checked_words(text[1:].decode("ascii").split(" "))
    if params is None:
        return None
    bits = 0
    for index, (keyword, value) in enumerate(params._items):
        known = _EVERYDAY.get(keyword)
        if known is None or not known[1](value) or (known[0] == SIZE_BIT and index):
            return params  # read otherwise: checked by the general path
        bits |= known[0]
    params._everyday = bits
    if not bits & _VARYING and len(text) <= _KNOWN_LENGTH:
        if len(_KNOWN) >= _KNOWN_COUNT:
            _KNOWN.clear()
        _KNOWN[text] = params
    return params


def everyday_bits(
    readers: Mapping[str, tuple[Extension, Parameter[object]]], offerable: Sequence[Extension]
) -> int:
    """The bits of the everyday keywords a session with these parameter ``readers``
    takes whenever it was opened with EHLO: those whose extension is in force in
    every such session of a server offering ``offerable`` (:func:`in_force_after_ehlo`)."""
    in_force = in_force_after_ehlo(offerable)
    bits = 0
    for keyword, (bit, _) in _EVERYDAY.items():
        known = readers.get(keyword)
        if known is not None and known[0].keyword in in_force:
            bits |= bit
    return bits


def in_force_after_ehlo(offerable: Sequence[Extension]) -> frozenset[str]:
    """The keywords of the ``offerable`` extensions in force in every session opened
    with EHLO: those with no requirement whose every dependency is such an extension
    too (SMTPUTF8 with 8BITMIME, RFC 6531 §3.1 item 8). One pass a level of
    dependency, so at most one an extension."""
    in_force: set[str] = set()
    for _ in range(len(offerable)):
        more = {
            entry.keyword
            for entry in offerable
            if not entry.requires
            and entry.keyword not in in_force
            and all(needed in in_force for needed in entry.depends)
        }
        if not more:
            break
        in_force |= more
    return frozenset(in_force)


_new: Final = object.__new__
_NONE: Final = Parameters()
"""The parameters after a ``SIZE=`` that comes alone."""
