"""The client attributes XCLIENT and XFORWARD carry (Postfix's XCLIENT_README and
XFORWARD_README).

A trusted client (a proxy, a content filter) tells the server about the
client it speaks for with ``attribute=value`` pairs: ``NAME``, ``ADDR``,
``PORT``, ``HELO`` and the rest. Each value is xtext on the wire (RFC 3461
§4), at most 255 characters, and may be ``[UNAVAILABLE]`` (any case), or for
XCLIENT's ``NAME`` ``[TEMPUNAVAIL]``. An IPv6 address is written
``IPV6:2001:db8::1``, never in brackets. This module holds what each
attribute may hold, so that an event can be built only with values that say
what they mean, and the server reads the wire into the same typed values.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from smtpcore._ip import ip_text
from smtpcore._numbers import parse_number
from smtpcore._words import ascii_upper
from smtpcore.smtp._dsn import xtext, xtext_octets

__all__ = [
    "TEMPUNAVAIL",
    "UNAVAILABLE",
    "XCLIENT_ATTRIBUTES",
    "XFORWARD_ATTRIBUTES",
    "XTEXT_VALUE",
    "Attribute",
    "Unavailable",
    "decode_value",
]


class Unavailable(enum.Enum):
    """An attribute the forwarding client cannot give: ``[UNAVAILABLE]``, or
    ``[TEMPUNAVAIL]`` for a host name whose lookup failed for now."""

    UNAVAILABLE = "[UNAVAILABLE]"
    TEMPUNAVAIL = "[TEMPUNAVAIL]"


UNAVAILABLE: Final = Unavailable.UNAVAILABLE
TEMPUNAVAIL: Final = Unavailable.TEMPUNAVAIL

MAX_VALUE: Final = 255
"""Characters in one value, xtext-decoded (XFORWARD_README, note 1); on the wire, the
octets of its xtext, which is what Postfix counts (smtpd.c, ``xclient_cmd``), and
what an event's value must fit as it will be sent (:meth:`Attribute.read`)."""
MAX_PROTOCOL_NAME: Final = 64
"""Octets in XFORWARD's PROTO, xtext-decoded (XFORWARD_README; Postfix's
``xforward_cmd`` counts octets)."""
XTEXT_VALUE: Final = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})+")
"""An xtext value as sent (RFC 3461 §4; lower-case hex digits read too)."""

# A host name: dot-separated labels of letters, digits, "-" and "_" (which Postfix's
# valid_hostname() lets through), not starting or ending with "-".
_HOSTNAME: Final = re.compile(
    r"(?=.{1,255}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
_NUMERIC: Final = re.compile(r"[0-9.]+")
_IPV6_PREFIX: Final = "IPV6:"

Value = str | int | Unavailable


_ESCAPED_OCTET: Final = re.compile("[\udc80-\udcff]")


def decode_value(value: str) -> str:
    """An xtext value a client sent (:data:`XTEXT_VALUE`), as text: an octet that is
    not part of a UTF-8 character becomes ``?``, as Postfix's ``printable()`` masks
    it (smtpd.c, ``xclient_cmd`` and ``xforward_cmd``). Written back, the value is
    then never longer as xtext than it came: U+FFFD, which
    :func:`~smtpcore.smtp.decode_xtext` gives, is 9 octets as xtext for the 3 of
    ``+E9``, and would take a value the wire's 255 octets hold over them."""
    text = xtext_octets(value).decode("utf-8", "surrogateescape")
    return _ESCAPED_OCTET.sub("?", text)


def _text(value: object, limit: int = MAX_VALUE) -> str:
    """Printable text without spaces: what any value must be once decoded (a CR or
    LF here would be a header or command injection further on)."""
    if not isinstance(value, str):
        raise ValueError(f"expected text, not {type(value).__name__}")
    if not 0 < len(value) <= limit:
        raise ValueError(f"a value is 1 to {limit} characters")
    if not value.isprintable() or any(char.isspace() for char in value):
        raise ValueError(f"a control character or space in {value!r}")
    return value


def _host(value: object) -> str:
    text = _text(value)
    if not _HOSTNAME.fullmatch(text):
        raise ValueError(f"not a host name: {text!r}")
    return text


def _valid_hostname(text: str) -> None:
    """XCLIENT's and XFORWARD's NAME on the wire, as current Postfix's
    ``valid_hostname()`` reads it (smtpd.c, ``xclient_cmd`` and ``xforward_cmd``),
    which answers anything else ``501 5.5.4``: a host
    name (:func:`_host`, which the event checked) without a final dot, and not all
    digits, which would pass for an address. ValueError otherwise."""
    if text.endswith(".") or _NUMERIC.fullmatch(text):
        raise ValueError(f"not a host name: {text!r}")


def _unprefixed(text: str) -> str:
    return text[5:] if ascii_upper(text[:5]) == _IPV6_PREFIX else text


def _ip(value: object) -> str:
    """An IPv4 or IPv6 address, ``IPV6:`` prefix or not; kept in its short form, an
    IPv4-mapped address as the IPv4 address it maps (:func:`~smtpcore._ip.ip_text`),
    which must be a host's (:func:`_host_ipv4`): so written, it would be refused.

    Never with a ``%`` zone (RFC 4007 §11), which ``ipaddress`` takes with any text
    after it: a zone names an interface of the host that wrote it, nothing a peer
    can be told, and its text would reach the session's peer and the log."""
    text = _unprefixed(_text(value))
    if "%" in text:
        raise ValueError(f"not an IP address (a zone): {text!r}")
    try:
        short = ip_text(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"not an IP address: {text!r}") from None
    if ":" not in short:
        _host_ipv4(short)
    return short


def _literal_ip(text: str) -> None:
    """XCLIENT's and XFORWARD's address on the wire: an IPv4 address, or an IPv6
    address after its ``IPV6:`` prefix (the READMEs' "Command syntax"), as Postfix's
    ``valid_mailhost_addr()`` reads it, which answers anything else ``501 5.5.4`` (a
    bare IPv6 address, ``IPV6:`` before an IPv4 one, text that is no address at all,
    an address in 0.0.0.0/8: :func:`_host_ipv4`). ValueError when ``text`` (which
    :func:`_ip` or :func:`_address` took) is not so written."""
    prefixed = ascii_upper(text[:5]) == _IPV6_PREFIX
    bare = text[5:] if prefixed else text
    version = ipaddress.ip_address(bare).version
    if version != (6 if prefixed else 4):
        raise ValueError(f"an IPv6 address is written IPV6:address, IPv4 bare: {text!r}")
    if "." in bare:
        _host_ipv4(bare.rpartition(":")[2])


def _host_ipv4(text: str) -> None:
    """An IPv4 address (alone, or the dotted end of an IPv6 one) whose first octet is
    not 0, but for ``0.0.0.0``: Postfix's ``valid_ipv4_hostaddr()`` answers the rest
    of 0.0.0.0/8 ``501 5.5.4``, addresses that name no host (RFC 1122 §3.2.1.3 (a)
    and (b): "this host on this network", a source at boot only). ValueError."""
    address = ipaddress.IPv4Address(text)
    if address.packed[0] == 0 and int(address) != 0:
        raise ValueError(f"not a host's address (0.0.0.0/8): {text!r}")


def _address(value: object) -> str:
    """XFORWARD's ADDR in an event: an IP address, or some other network's address as
    text, which the README once allowed (a server that takes it; on the wire our
    server, as current Postfix, holds a client to :func:`_literal_ip`); not an IP
    address with a zone passed off as text (see :func:`_ip`), nor text after
    ``IPV6:``, which names an IPv6 address alone."""
    text = _text(value)
    try:
        ipaddress.ip_address(_unprefixed(text))
    except ValueError:
        if "%" in text:
            raise ValueError(f"not an address (a zone): {text!r}") from None
        if _unprefixed(text) != text:
            raise ValueError(f"not an IPv6 address after IPV6: {text!r}") from None
        return text
    return _ip(text)


def _port(value: object) -> int:
    if isinstance(value, str):
        number = parse_number(value, max_digits=5)
        if number is None:
            raise ValueError(f"not a port number: {value!r}")
        value = number
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ValueError(f"not a port number: {value!r}")
    return value


def _one_of(*words: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = ascii_upper(_text(value))
        if text not in words:
            raise ValueError(f"expected {' or '.join(words)}, not {value!r}")
        return text

    return check


def _protocol_name(value: object) -> str:
    """XFORWARD's PROTO: text of at most 64 octets, as Postfix's ``xforward_cmd``
    counts (a UTF-8 character may take four)."""
    text = _text(value)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PROTOCOL_NAME:
        raise ValueError(f"a PROTO is at most {MAX_PROTOCOL_NAME} octets: {text!r}")
    return text


def _write_ip(value: str) -> str:
    """An IPv6 address with its ``IPV6:`` prefix; anything else as it is."""
    try:
        version = ipaddress.ip_address(value).version
    except ValueError:
        return value
    return f"{_IPV6_PREFIX}{value}" if version == 6 else value


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute: its wire name, the event field it fills, and what it may hold."""

    name: str
    field: str
    check: Callable[[object], Value]
    """Validates a value (wire text or typed) and returns it typed and normalised."""
    write: Callable[[str], str] = str
    tempunavail: bool = False
    unavailable: bool = True
    """Whether the value may be ``[UNAVAILABLE]``: not XCLIENT's PROTO, which is
    ``SMTP`` or ``ESMTP`` (XCLIENT_README; Postfix answers ``501 5.5.4``)."""
    wire_form: Callable[[str], None] | None = None
    """Refuses (ValueError) a value the wire writes otherwise than the attribute's
    grammar says, where :attr:`check`, which the typed values an application gives
    pass too, is lenient (XCLIENT's ADDR: an IPv6 address without ``IPV6:``)."""

    def read(self, value: object) -> Value:
        """``value`` as the event holds it: an :class:`Unavailable`, or checked."""
        if isinstance(value, Unavailable):
            unavailable: Unavailable | None = value
        elif isinstance(value, str):
            unavailable = _UNAVAILABLE_WORDS.get(ascii_upper(value))
        else:
            unavailable = None
        if unavailable is TEMPUNAVAIL and not self.tempunavail:
            raise ValueError(f"{self.name} cannot be [TEMPUNAVAIL]")
        if unavailable is UNAVAILABLE and not self.unavailable:
            raise ValueError(f"{self.name} cannot be [UNAVAILABLE]")
        if unavailable is not None:
            return unavailable
        typed = self.check(value)
        sent = xtext(self.to_text(typed))
        if len(sent) > MAX_VALUE:
            raise ValueError(f"a value is at most {MAX_VALUE} octets as xtext, not {len(sent)}")
        return typed

    def from_wire(self, text: str) -> Value:
        """``text`` (an xtext-decoded value a client sent) as the event holds it, or
        ValueError: :meth:`read`, and the attribute's ``wire_form``."""
        value = self.read(text)
        if self.wire_form is not None and not isinstance(value, Unavailable):
            self.wire_form(text)
        return value

    def to_text(self, value: Value) -> str:
        """The value as text, before xtext encoding."""
        if isinstance(value, Unavailable):
            return value.value
        return self.write(value) if isinstance(value, str) else str(value)


_UNAVAILABLE_WORDS: Final = {member.value: member for member in Unavailable}

XCLIENT_ATTRIBUTES: Final = (
    Attribute("NAME", "name", _host, tempunavail=True, wire_form=_valid_hostname),
    Attribute("ADDR", "addr", _ip, _write_ip, wire_form=_literal_ip),
    Attribute("PORT", "port", _port),
    Attribute("PROTO", "proto", _one_of("SMTP", "ESMTP"), unavailable=False),
    Attribute("HELO", "helo", _text),
    Attribute("LOGIN", "login", _text),
    Attribute("DESTADDR", "destaddr", _ip, _write_ip, wire_form=_literal_ip),
    Attribute("DESTPORT", "destport", _port),
)
"""XCLIENT's attributes (XCLIENT_README: Postfix 2.1 to 3.2), in the order the EHLO
reply lists them."""

XFORWARD_ATTRIBUTES: Final = (
    Attribute("NAME", "name", _host, wire_form=_valid_hostname),
    Attribute("ADDR", "addr", _address, _write_ip, wire_form=_literal_ip),
    Attribute("PORT", "port", _port),
    Attribute("PROTO", "proto", _protocol_name),
    Attribute("HELO", "helo", _text),
    Attribute("IDENT", "ident", _text),
    Attribute("SOURCE", "source", _one_of("LOCAL", "REMOTE")),
)
"""XFORWARD's attributes (XFORWARD_README), in the order the EHLO reply lists them. On
the wire, as current Postfix (smtpd.c, ``xforward_cmd``) reads them: NAME a host name,
ADDR an IPv4 address (not in 0.0.0.0/8 but for 0.0.0.0) or ``IPV6:`` and an IPv6
one, PORT digits, PROTO at most 64 octets, each or ``[UNAVAILABLE]``; HELO and IDENT
any text."""
