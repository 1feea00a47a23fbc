"""Domains and address literals (RFC 5321 §4.1.2 Domain, §4.1.3 address-literal):
their grammar, their checks and their normal forms, for mailboxes, EHLO and a
host's own name.

Labels are checked here, converted to A-labels by :mod:`smtpcore._idna`; the
public functions are re-exported by :mod:`smtpcore.address`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TypeAlias

from smtpcore._address_syntax import (
    MAX_DOMAIN_OCTETS,
    MAX_LABEL_OCTETS,
    AddressError,
    _check_chars,
    _octets,
    _show,
)
from smtpcore._idna import LabelError, to_a_label
from smtpcore._numbers import is_digits

__all__ = [
    "is_address_literal",
    "normalize_domain",
    "normalize_host_name",
    "parse_address_literal",
    "parse_domain",
]

_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")  # sub-domain
# A label of a host's own name: a sub-domain that may also hold "_", as Postfix's
# valid_hostname() takes it (a machine's name may have one).
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")
_LDH_STR = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]")  # Standardized-tag
_DCONTENT = re.compile(r"[!-Z^-~]+")  # %d33-90 / %d94-126
_IPV4_LITERAL = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_IPV6_ADDR = re.compile(r"[0-9A-Fa-f:.]+")
_IPV4_TAIL = re.compile(r"(?<=:)[0-9]{1,3}(?:\.[0-9]{1,3}){3}\Z")  # IPv6v4-full/comp's tail

_IPAddress: TypeAlias = "ipaddress.IPv4Address | ipaddress.IPv6Address"


def _label_to_ascii(label: str, domain: str, *, host: bool = False) -> str:
    """One label in lowercase LDH / A-label form, or AddressError (RFC 5321 §4.1.2, RFC 5890).

    ``host``: the label of a host's own name, whose ASCII labels may hold ``_``."""
    if not label:
        raise AddressError(f"empty label in domain {_show(domain)}")
    if label.isascii():
        if len(label) > MAX_LABEL_OCTETS:
            raise AddressError(
                f"label {_show(label)} is {len(label)} octets, over {MAX_LABEL_OCTETS}"
            )
        if not (_HOST_LABEL if host else _LDH_LABEL).fullmatch(label):
            also = ", underscores" if host else ""
            raise AddressError(
                f"label {_show(label)} in domain {_show(domain)} is not letters, digits{also} "
                "and inner hyphens (RFC 5321 §4.1.2 sub-domain)"
            )
        return label.lower()
    try:
        alabel = to_a_label(label)
    except LabelError as exc:
        raise AddressError(str(exc)) from None
    if len(alabel) > MAX_LABEL_OCTETS:
        raise AddressError(
            f"label {_show(label)} is {len(alabel)} octets in A-label form, "
            f"over {MAX_LABEL_OCTETS}"
        )
    return alabel


def _format_ipv6(addr: ipaddress.IPv6Address) -> str:
    """RFC 5952 text form; IPv4-mapped addresses keep their dotted tail (§5) on every Python."""
    mapped = addr.ipv4_mapped
    return f"::ffff:{mapped}" if mapped is not None else addr.compressed


def _decimal_snums(dotted: str) -> str:
    """``dotted`` (four runs of 1 to 3 ASCII digits) with each Snum written as its
    decimal value: RFC 5321 §4.1.3 reads ``010`` as ten, never octal, and
    :mod:`ipaddress` refuses leading zeros. Over 255 stays so, to be refused."""
    return ".".join(str(int(snum)) for snum in dotted.split("."))


def _decimal_tail(match: re.Match[str]) -> str:
    return _decimal_snums(match.group())


def _parse_literal(text: str) -> tuple[str, _IPAddress | None]:
    """Validate an address literal (RFC 5321 §4.1.3); return its normal form and address."""
    _check_chars(text, "address literal")
    if len(text) < 3 or not text.startswith("[") or not text.endswith("]"):
        raise AddressError(f"{_show(text)} is not a bracketed address literal")
    if _octets(text) > MAX_DOMAIN_OCTETS:
        raise AddressError(f"address literal is over {MAX_DOMAIN_OCTETS} octets")
    body = text[1:-1]
    if _IPV4_LITERAL.fullmatch(body):
        try:
            v4 = ipaddress.IPv4Address(_decimal_snums(body))
        except ValueError as exc:
            raise AddressError(f"invalid IPv4 address literal {_show(text)}: {exc}") from None
        return f"[{v4}]", v4
    tag, colon, content = body.partition(":")
    if not colon:
        raise AddressError(f"{_show(text)} is neither an IPv4 literal nor [tag:content]")
    if tag.lower() == "ipv6":  # ABNF literal strings are case-insensitive
        if not _IPV6_ADDR.fullmatch(content):
            raise AddressError(f"invalid IPv6 address literal {_show(text)}")
        try:
            v6 = ipaddress.IPv6Address(_IPV4_TAIL.sub(_decimal_tail, content))
        except ValueError as exc:
            raise AddressError(f"invalid IPv6 address literal {_show(text)}: {exc}") from None
        if "::" in content:
            groups = [g for g in content.split(":") if g]
            count = len(groups) + (1 if "." in content else 0)
            if count > 6:
                raise AddressError(
                    f"{_show(text)}: '::' must stand for at least two zero groups "
                    "(RFC 5321 §4.1.3 IPv6-comp)"
                )
        return f"[IPv6:{_format_ipv6(v6)}]", v6
    if not _LDH_STR.fullmatch(tag) or not _DCONTENT.fullmatch(content):
        raise AddressError(
            f"invalid general address literal {_show(text)} (RFC 5321 §4.1.3: "
            "Standardized-tag ':' printable ASCII other than '[', '\\', ']')"
        )
    return text, None


def _validate_domain(
    text: str, *, allow_trailing_dot: bool, host: bool = False, numeric_top: bool = False
) -> str:
    """Check a Domain or address-literal; return lowercase A-label (or normalized literal) form.

    ``host``: a host's own name, whose ASCII labels may hold ``_`` (see ``_HOST_LABEL``).
    ``numeric_top``: an all-numeric last label is allowed, as the grammar allows it
    (RFC 5321 §4.1.2 ``sub-domain``); elsewhere it is refused, since no top-level
    domain is numeric (RFC 3696 §2) and such a name is an IP address written wrong."""
    if not text:
        raise AddressError("empty domain")
    _check_chars(text, "domain")
    if text.startswith("["):
        return _parse_literal(text)[0]
    size = _octets(text)
    if size > MAX_DOMAIN_OCTETS:
        raise AddressError(
            f"domain is {size} octets, over the limit of {MAX_DOMAIN_OCTETS} (RFC 5321 §4.5.3.1.2)"
        )
    name = text
    if text.endswith(".") and text != ".":
        if not allow_trailing_dot:
            raise AddressError(f"domain {_show(text)} ends with a dot (RFC 5321 §4.1.2)")
        name = text[:-1]
    labels = [_label_to_ascii(label, text, host=host) for label in name.split(".")]
    if not numeric_top and is_digits(labels[-1]):
        raise AddressError(
            f"domain {_show(text)} has an all-numeric top label; write an IP address as "
            "an address literal such as [192.0.2.1] (RFC 5321 §4.1.3)"
        )
    ascii_name = ".".join(labels)
    if len(ascii_name) > MAX_DOMAIN_OCTETS:
        raise AddressError(f"domain in A-label form is over {MAX_DOMAIN_OCTETS} octets")
    return ascii_name


def parse_domain(text: str) -> str:
    """Validate the Domain or address-literal of EHLO/HELO and return it unchanged.

    RFC 5321 §4.1.1.1 with U-labels (RFC 6531 §3.3). One trailing root dot is tolerated.
    """
    _validate_domain(text, allow_trailing_dot=True)
    return text


def normalize_domain(text: str) -> str:
    """Lowercase A-label form without a trailing dot, for comparing and resolving domains.

    Address literals come back in canonical form (``[IPv6:2001:db8::1]``); general
    literals unchanged.
    """
    return _validate_domain(text, allow_trailing_dot=True)


def normalize_host_name(text: str) -> str:
    """A host's own name, for its greeting, its EHLO and its trace and report fields,
    in lowercase A-label form without a trailing dot; AddressError for anything else,
    an address literal too.

    RFC 5321 §4.1.2 Domain (labels of 1 to 63 octets, 255 in all), whose ASCII labels
    may also hold ``_``, as Postfix's ``valid_hostname()`` allows for a machine's name.
    A U-label is converted: RFC 6531 puts UTF-8 on the wire only once SMTPUTF8 is
    agreed, which the greeting and a client's EHLO come before.
    """
    if text.startswith("["):
        raise AddressError(f"{_show(text)} is an address literal, not a host name")
    return _validate_domain(text, allow_trailing_dot=True, host=True)


def is_address_literal(text: str) -> bool:
    """True when ``text`` is a valid address literal (RFC 5321 §4.1.3)."""
    if not text.startswith("["):
        return False
    try:
        _parse_literal(text)
    except AddressError:
        return False
    return True


def parse_address_literal(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address of ``[192.0.2.1]`` or ``[IPv6:...]``; None for a general literal."""
    return _parse_literal(text)[1]
