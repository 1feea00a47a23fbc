"""The DSN parameters of MAIL and RCPT as typed values (RFC 3461 §4, RFC 6533 §3).

``RET`` and ``ENVID`` go with MAIL, ``NOTIFY`` and ``ORCPT`` with RCPT. Each
has a parser that refuses what the RFC's grammar refuses and a wire form
that the parser reads back to the same value. What to report, and when, is
the application's (the reference server's bounces follow RFC 3464).
"""

from __future__ import annotations

import enum
import itertools
import re
from dataclasses import dataclass
from typing import Final

from smtpcore._errors import wrong_type
from smtpcore._textsafe import holds_unsafe
from smtpcore._words import ascii_upper

__all__ = [
    "DSNError",
    "EnvelopeId",
    "Notify",
    "OriginalRecipient",
    "Ret",
    "decode_xtext",
    "dsn_mail_problem",
    "dsn_rcpt_problem",
    "read_any_case_xtext",
    "read_xtext",
    "xtext",
]

# xtext (RFC 3461 §4): printable ASCII but "+" and "=", and "+" 2HEXDIGIT.
_XTEXT: Final = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+")
# The same, hex of either case: what a server takes where it must not refuse mail.
_XTEXT_ANY_CASE: Final = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})+")
_ADDR_TYPE: Final = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")
_XTEXT_HEX: Final = re.compile(rb"\+([0-9A-Fa-f]{2})")
# RFC 6533 §3: QCHAR is printable ASCII but "+", "=" and "\"; QUCHAR adds any
# non-ASCII character; EmbeddedUnicodeChar is "\x{HEXPOINT}", a code point in
# upper-case hex without leading zeros, and two digits only for the ASCII
# characters QCHAR leaves out or for U+0080 to U+00FF.
_HEXPOINT: Final = (
    r"(?:0[1-9]|1[0-9]|20|2B|3D|5C|7F|[89A-F][0-9A-F]"
    r"|[1-9A-F][0-9A-F]{2}|[1-9A-CE-F][0-9A-F]{3}|D[0-7][0-9A-F]{2}"
    r"|[1-9A-F][0-9A-F]{4}|10[0-9A-F]{4})"
)
_EMBEDDED: Final = rf"\\x\{{{_HEXPOINT}\}}"
_UTF8_XTEXT: Final = re.compile(rf"(?:[!-*,-<>-\[\]-~]|{_EMBEDDED})+")
_UTF8_UNITEXT: Final = re.compile(rf"(?:[!-*,-<>-\[\]-~\u0080-\U0010ffff]|{_EMBEDDED})+")
_EMBEDDED_ONE: Final = re.compile(r"\\x\{([0-9A-F]+)\}")
MAX_ENVID: Final = 100
MAX_ORCPT: Final = 500


class DSNError(ValueError):
    """A DSN parameter value the RFC's grammar refuses."""


class Ret(enum.Enum):
    """``RET=``: what a failure report returns of the message (RFC 3461 §4.3)."""

    FULL = "FULL"
    HDRS = "HDRS"

    @classmethod
    def parse(cls, value: str) -> Ret:
        ret = _RETS.get(ascii_upper(value))  # a dict: Ret(value) runs Enum's Python code
        if ret is None:
            raise DSNError("RET must be FULL or HDRS")
        return ret

    def to_parameter(self) -> str:
        return self.value


class Notify(enum.Flag):
    """``NOTIFY=``: which events get a report (RFC 3461 §4.1).

    ``Notify.NEVER`` (no flag) asks for none; otherwise any of SUCCESS,
    FAILURE and DELAY: ``Notify.FAILURE | Notify.DELAY``.
    """

    NEVER = 0
    SUCCESS = 1
    FAILURE = 2
    DELAY = 4

    @classmethod
    def parse(cls, value: str) -> Notify:
        """``NEVER``, or SUCCESS, FAILURE and DELAY, each at most once, in any order and
        case (RFC 3461 §4.1): looked up among every such value, read once when the
        module loads, since a Flag's operators are Python code."""
        flags = _NOTIFY_VALUES.get(ascii_upper(value))
        if flags is None:
            raise DSNError("NOTIFY must be NEVER, or a list of SUCCESS, FAILURE and DELAY")
        return flags

    def to_parameter(self) -> str:
        events = (Notify.SUCCESS, Notify.FAILURE, Notify.DELAY)
        return ",".join(str(event.name) for event in events if event in self) or "NEVER"


_RETS: Final = {ret.value: ret for ret in Ret}


def _read_notify(value: str) -> Notify | None:
    """``NOTIFY=``'s value read word by word (RFC 3461 §4.1): None if malformed."""
    words = ascii_upper(value).split(",")
    if words == ["NEVER"]:
        return Notify.NEVER
    flags = Notify.NEVER
    for word in words:
        flag = Notify.__members__.get(word)
        if flag is None or flag is Notify.NEVER or flag in flags:
            return None
        flags |= flag
    return flags


def _notify_values() -> dict[str, Notify]:
    """Every well-formed ``NOTIFY=`` value, upper-cased, and what it asks for."""
    values = {"NEVER": Notify.NEVER}
    for count in (1, 2, 3):
        for events in itertools.permutations(("SUCCESS", "FAILURE", "DELAY"), count):
            text = ",".join(events)
            flags = _read_notify(text)
            assert flags is not None
            values[text] = flags
    return values


_NOTIFY_VALUES: Final = _notify_values()


@dataclass(frozen=True, slots=True)
class EnvelopeId:
    """``ENVID=``: the sender's identifier for the transaction (RFC 3461 §4.4), as text."""

    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise wrong_type("ENVID text", self.text, "a str")
        if not self.text or len(xtext(self.text)) > MAX_ENVID:
            raise DSNError("ENVID must be xtext of 1 to 100 characters")
        if holds_unsafe(self.text):  # RFC 3461 §4.4: printable characters
            raise DSNError("ENVID holds a control, format or separator character (RFC 3461 §4.4)")

    @classmethod
    def parse(cls, value: str) -> EnvelopeId:
        if len(value) > MAX_ENVID:
            raise DSNError(_MALFORMED_ENVID)
        return cls(read_xtext(value, "ENVID", malformed=_MALFORMED_ENVID))

    def to_parameter(self) -> str:
        return xtext(self.text)


@dataclass(frozen=True, slots=True)
class OriginalRecipient:
    """``ORCPT=``: the recipient as the original sender gave it (RFC 3461 §4.2).

    ``addr_type`` is ``"rfc822"`` for an ASCII address, ``"utf-8"`` for an
    internationalized one (RFC 6533 §3; :meth:`of` chooses), or another type;
    ``address`` is the decoded text. The wire form of a ``utf-8`` address is
    ``utf-8-addr-xtext``, which any server may be sent, where that fits in 500
    characters, else the raw ``utf-8-addr-unitext``, which goes only in an
    SMTPUTF8 transaction; a server reads either form there.

    RFC 3461 §4.2 limits the value to 500 characters as it is sent: :meth:`parse`
    measures the value it is given, and a value built here must fit in the form
    :meth:`to_parameter` writes.
    """

    addr_type: str
    address: str

    def __post_init__(self) -> None:
        if not isinstance(self.addr_type, str):
            raise wrong_type("ORCPT address type", self.addr_type, "a str")
        if not isinstance(self.address, str):
            raise wrong_type("ORCPT address", self.address, "a str")
        if not _ADDR_TYPE.fullmatch(self.addr_type):
            raise DSNError(f"invalid ORCPT address type {self.addr_type!r}")
        if not self.address:
            raise DSNError("ORCPT needs an address")
        if self.addr_type.lower() == "utf-8" and not _UTF8_XTEXT.fullmatch(
            utf8_addr_xtext(self.address)
        ):
            raise DSNError("a utf-8 ORCPT address holds a character RFC 6533 cannot carry")
        if holds_unsafe(self.address):  # RFC 3461 §4.2: printable characters
            raise DSNError("ORCPT holds a control, format or separator character (RFC 3461 §4.2)")
        if len(self.to_parameter()) > MAX_ORCPT:
            raise DSNError("ORCPT is longer than 500 characters")

    @classmethod
    def of(cls, address: str) -> OriginalRecipient:
        """``rfc822`` for an ASCII address, ``utf-8`` otherwise."""
        return cls("rfc822" if address.isascii() else "utf-8", address)

    @classmethod
    def parse(cls, value: str, *, utf8: bool = False) -> OriginalRecipient:
        """Read ``addr-type;address``; ``utf8`` allows raw UTF-8 in a ``utf-8`` address
        (``utf-8-addr-unitext``, only in an SMTPUTF8 transaction)."""
        if len(value) > MAX_ORCPT:  # RFC 3461 §4.2: the value as it came
            raise DSNError("ORCPT is longer than 500 characters")
        addr_type, semicolon, encoded = value.partition(";")
        if not semicolon or not _ADDR_TYPE.fullmatch(addr_type):
            raise DSNError("ORCPT must be addr-type;xtext")
        if addr_type.lower() == "utf-8":
            pattern = _UTF8_UNITEXT if utf8 else _UTF8_XTEXT
            if not pattern.fullmatch(encoded):
                raise DSNError("a utf-8 ORCPT must be utf-8-addr-xtext (RFC 6533 §3)")
            return cls(addr_type, _decode_utf8_addr(encoded))
        return cls(
            addr_type, read_xtext(encoded, "ORCPT", malformed="ORCPT must be addr-type;xtext")
        )

    def to_parameter(self) -> str:
        """``addr-type;xtext``; for a ``utf-8`` address, ``utf-8-addr-xtext`` where it
        fits RFC 3461's 500 characters (§4.2), which any server may be sent, else the
        shorter ``utf-8-addr-unitext``, raw UTF-8 that goes only in an SMTPUTF8
        transaction (RFC 6533 §3; the client machine refuses it otherwise). Either
        way :meth:`parse` with ``utf8=True`` reads it back to this value."""
        if self.addr_type.lower() != "utf-8":
            return f"{self.addr_type};{xtext(self.address)}"
        escaped = f"{self.addr_type};{utf8_addr_xtext(self.address)}"
        if len(escaped) <= MAX_ORCPT:
            return escaped
        return f"{self.addr_type};{_utf8_addr_unitext(self.address)}"


_MALFORMED_ENVID: Final = "ENVID must be xtext of at most 100 characters"


def read_xtext(value: str, keyword: str, *, malformed: str | None = None) -> str:
    """The text a peer's xtext value stands for, read strictly: the one reader of
    ``ENVID`` and ``ORCPT``, and of the ``AUTH=`` a client may send (RFC 3461 §4,
    RFC 4954 §5; a server reads that with :func:`read_any_case_xtext`). Only ``xchar``
    and ``"+" 2(%x30-39 / %x41-46)``: a "+" without two upper-case hex digits, an
    "=" or a space, or octets that are not UTF-8, raise :class:`DSNError`, so that
    no encoded control slips past a check of the wire form. Whether the text may
    hold what it decodes to (a CR, a NUL) is the caller's question. ``malformed``: the
    refusal's text for a value that is no xtext, if not the general one."""
    if not _XTEXT.fullmatch(value):
        raise DSNError(malformed or f"{keyword} must be xtext (RFC 3461 §4)")
    raw = _XTEXT_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode("ascii"))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DSNError(f"{keyword} must be UTF-8 text in xtext") from None


def read_any_case_xtext(value: str, keyword: str) -> bytes:
    """The octets a peer's xtext value stands for, read as a server reads a value it
    must not refuse mail over (``AUTH=``, RFC 4954 §5): the grammar of RFC 3461 §4,
    but hex of either case after "+", as Exim reads it. A value that is no xtext at
    all (a "+" without two hex digits, a space, "=", a control, anything beyond
    ASCII) raises :class:`DSNError`; what the octets hold is the caller's question."""
    if not _XTEXT_ANY_CASE.fullmatch(value):
        raise DSNError(f"{keyword} must be xtext (RFC 3461 §4)")
    return xtext_octets(value)


def _decode_utf8_addr(encoded: str) -> str:
    return _EMBEDDED_ONE.sub(lambda m: chr(int(m.group(1), 16)), encoded)


def utf8_addr_xtext(address: str) -> str:
    """``address`` as RFC 6533's ``utf-8-addr-xtext``: printable ASCII but "+", "="
    and "\\" as it is, anything else as ``\\x{HEX}``."""
    return "".join(
        char if "!" <= char <= "~" and char not in "+=\\" else f"\\x{{{ord(char):02X}}}"
        for char in address
    )


def _utf8_addr_unitext(address: str) -> str:
    """``address`` as RFC 6533's ``utf-8-addr-unitext``: as :func:`utf8_addr_xtext`, but
    characters beyond ASCII as they are."""
    return "".join(
        char
        if ("!" <= char <= "~" and char not in "+=\\") or char >= "\x80"
        else f"\\x{{{ord(char):02X}}}"
        for char in address
    )


def dsn_mail_problem(keyword: str, value: str | None) -> str | None:
    """What is wrong with a ``RET`` or ``ENVID`` value, or None."""
    if value is None:
        return f"{keyword} needs a value"
    try:
        Ret.parse(value) if keyword == "RET" else EnvelopeId.parse(value)
    except DSNError as exc:
        return str(exc)
    return None


def dsn_rcpt_problem(keyword: str, value: str | None, *, utf8: bool = False) -> str | None:
    """What is wrong with a ``NOTIFY`` or ``ORCPT`` value, or None."""
    if value is None:
        return f"{keyword} needs a value"
    try:
        Notify.parse(value) if keyword == "NOTIFY" else OriginalRecipient.parse(value, utf8=utf8)
    except DSNError as exc:
        return str(exc)
    return None


def xtext(text: str) -> str:
    """``text`` as xtext (RFC 3461 §4), for ``ENVID``, ``ORCPT`` and ``AUTH=``: each
    UTF-8 octet outside "!" to "~", and "+" and "=", becomes "+" and two hex digits.

    >>> xtext("rfc822;bob+tag@pqr.example")
    'rfc822;bob+2Btag@pqr.example'
    """
    return "".join(
        chr(octet) if 33 <= octet <= 126 and octet not in (43, 61) else f"+{octet:02X}"
        for octet in text.encode("utf-8")
    )


def xtext_octets(value: str) -> bytes:
    """The octets an xtext value stands for (RFC 3461 §4), each ``+XX`` one octet.

    Lenient, for a value already checked or a peer known to bend the grammar (Postfix's
    XCLIENT and XFORWARD values, lower-case hex and all): lower-case hex is decoded and
    a "+" without two hex digits kept as it is. A value from the wire that must be
    xtext is read with :func:`read_xtext` or :func:`read_any_case_xtext`."""
    return _XTEXT_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode("utf-8"))


def decode_xtext(value: str) -> str:
    """The text an xtext value stands for; octets that are not UTF-8 become U+FFFD.

    As lenient as :func:`xtext_octets`: for a value the server machine has accepted
    (an ``ENVID`` in a bounce), or for display. It checks nothing, so the text may hold
    any control an escape names."""
    return xtext_octets(value).decode("utf-8", "replace")
