"""Envelope addresses: RFC 5321 Mailbox and Path syntax, with the RFC 6531 UTF-8 additions.

This is the one place where text from ``MAIL FROM:``, ``RCPT TO:`` and ``EHLO`` becomes a
value, so every rule that keeps an address safe to write back on the wire lives here:
the grammar of RFC 5321 §4.1.2 and §4.1.3, the domain's size limits, and the
UTF8-non-ascii extensions of RFC 6531 §3.3 (non-ASCII in atext, qtextSMTP and U-labels).

Internationalized domain labels are converted to A-labels in one module of their own,
which holds them to IDNA 2003's checks (the standard library's ``encodings.idna``) and takes the
four characters IDNA 2008 keeps (``ß``, final sigma, ZWJ and ZWNJ) the IDNA 2008 way: a
label the two standards would make different domains of is refused, never converted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from smtpcore._errors import LocalProtocolError
from smtpcore._idna import LabelError, to_a_label
from smtpcore._numbers import is_digits
from smtpcore._textsafe import FORBIDDEN_IN_ADDRESSES

__all__ = [
    "MAX_DOMAIN_OCTETS",
    "MAX_LABEL_OCTETS",
    "MAX_LOCAL_PART_OCTETS",
    "MAX_PATH_OCTETS",
    "MAX_RECEIVED_PATH_OCTETS",
    "STRICT_ADDRESSES",
    "AddressError",
    "AddressPolicy",
    "Mailbox",
    "check_received_path",
    "format_path",
    "is_address_literal",
    "normalize_domain",
    "normalize_host_name",
    "parse_address_literal",
    "parse_domain",
    "parse_mailbox",
    "parse_path",
    "quote_local_part",
    "split_path",
]

MAX_LOCAL_PART_OCTETS = 64
"""The local part every receiver must take, in octets (RFC 5321 §4.5.3.1.1). A minimum,
not a limit: §4.5.3.1 asks for no limit "to the maximum extent possible", and SRS and
VERP senders go past it, so a :class:`Mailbox` may be longer, bounded on receipt by
:data:`MAX_RECEIVED_PATH_OCTETS`; Postfix receives and sends such addresses alike."""
MAX_DOMAIN_OCTETS = 255
"""The longest domain, in octets (RFC 5321 §4.5.3.1.2)."""
MAX_PATH_OCTETS = 256
"""The path every receiver must take, angle brackets included (RFC 5321 §4.5.3.1.3):
a minimum, as :data:`MAX_LOCAL_PART_OCTETS` is, not a limit on a :class:`Mailbox`."""
MAX_RECEIVED_PATH_OCTETS: Final = 900
"""The longest path a server takes in ``MAIL`` or ``RCPT``, angle brackets included, in
its longest written form (:func:`check_received_path`), whatever the command line's
extension allowances. A received path is written whole on one line of a message
or report, which RFC 5322 §2.1.1 and RFC 6532 §3.4 keep to 998 octets: ``Return-Path:
<path>`` (13 octets more), ``Final-Recipient: rfc822; address`` (23 more) and, the
longest, ``\tfor <path>; date`` in ``Received:`` (38 more); 900 leaves room, so a
next hop is never handed a line it must refuse (RFC 5321 §4.5.3.1.6)."""
MAX_LABEL_OCTETS = 63
"""The longest label of a domain, in octets (RFC 1035 §2.3.4)."""

# Grammar, named after the RFC 5321 §4.1.2 / §4.1.3 rules. UTF8-non-ascii (RFC 6531 §3.3)
# is "any non-ASCII character"; control and surrogate code points are refused up front
# by _FORBIDDEN, with the separators and bidi overrides of FORBIDDEN_IN_ADDRESSES, so the
# classes below may simply include the whole non-ASCII range.
_UTF8_NON_ASCII = "\u0080-\U0010ffff"
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~" + _UTF8_NON_ASCII
_ATOM = f"[{_ATEXT}]+"
_DOT_STRING = re.compile(f"{_ATOM}(?:\\.{_ATOM})*")
# atext and dots, any number anywhere, with one atext at least: a Dot-string but for
# its dots (a dot first, last or doubled), as old Japanese carriers' addresses are.
_LOOSE_DOT_STRING = re.compile(f"\\.*[{_ATEXT}][{_ATEXT}.]*")
_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")  # sub-domain
# A label of a host's own name: a sub-domain that may also hold "_", as Postfix's
# valid_hostname() takes it (a machine's name may have one).
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")
_LDH_STR = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]")  # Standardized-tag
_DCONTENT = re.compile(r"[!-Z^-~]+")  # %d33-90 / %d94-126
_IPV4_LITERAL = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_IPV6_ADDR = re.compile(r"[0-9A-Fa-f:.]+")
_IPV4_TAIL = re.compile(r"(?<=:)[0-9]{1,3}(?:\.[0-9]{1,3}){3}\Z")  # IPv6v4-full/comp's tail
# FORBIDDEN_IN_ADDRESSES (controls, separators, bidi overrides and isolates) and lone
# surrogates, which UTF-8 cannot encode: never valid in any SMTP address or domain.
_FORBIDDEN = re.compile(f"{FORBIDDEN_IN_ADDRESSES.pattern}|[\ud800-\udfff]")
# What _check_chars looks at any further: printable ASCII alone is checked in one search.
_NOT_PRINTABLE_ASCII = re.compile("[^\x20-\x7e]")
_CHAR_NAMES = {"\r": "CR", "\n": "LF", "\x00": "NUL", "\t": "TAB"}

# The common case, checked with two compiled patterns before the full rules run:
# an ASCII dot-atom local part and an ASCII LDH host name.
_SIMPLE_LOCAL = re.compile(
    r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*"
)
# Labels of 1 to 63 letters, digits and hyphens, no hyphen first or last: a letter or
# digit first, a lookbehind for the last, and the dot before each further label, so that
# a match never backtracks (the everyday-line parser matches every MAIL and RCPT with it).
_SIMPLE_LABEL = r"[A-Za-z0-9][A-Za-z0-9-]{0,62}(?<!-)"
_SIMPLE_DOMAIN = re.compile(rf"{_SIMPLE_LABEL}(?:\.{_SIMPLE_LABEL})*")

# In a path, each label but the last is followed by a dot: one all digits before the
# ">" is the last, which must not be numeric (as simple_mailbox asks).
_PATH_LABEL = rf"(?![0-9]+>){_SIMPLE_LABEL}"
SIMPLE_PATH_PATTERN: Final = (
    f"<(?=[^>]{{3,{MAX_RECEIVED_PATH_OCTETS - 2}}}>)"
    f"({_SIMPLE_LOCAL.pattern})@(?=[^>]{{1,{MAX_DOMAIN_OCTETS}}}>)"
    f"({_PATH_LABEL}(?:\\.{_PATH_LABEL})*)>"
)
"""The everyday path (ASCII dot-atom local part, LDH host name), its parts in two groups,
within the rules :func:`simple_mailbox` holds such parts to (a domain of at most 255
octets, a last label not all digits) and the limit :func:`check_received_path` holds a
received path to (:data:`MAX_RECEIVED_PATH_OCTETS`, which such a path, ASCII and
unquoted, meets in its length): the lookaheads read the lengths up to the ">", which
neither part can hold. A match is a mailbox as it stands and a path a server takes,
for the hot paths that recognise whole lines. Not exported: internal to the package."""
_SIMPLE_PATH = re.compile(SIMPLE_PATH_PATTERN)

_IPAddress: TypeAlias = "ipaddress.IPv4Address | ipaddress.IPv6Address"


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which envelope addresses beyond RFC 5321's grammar a server takes in ``MAIL``
    and ``RCPT``; strict by default, as :class:`~smtpcore.FramingPolicy` is.

    Each leniency is a named opt-in for addresses real senders use and that Postfix
    takes by default; none weakens the checks that keep an address safe to write
    back (no control, no CR or LF, the domain's rules, the command line limit, and
    under every policy a path of at most :data:`MAX_RECEIVED_PATH_OCTETS`).
    An address taken under one is the same :class:`Mailbox` its RFC 5321 spelling
    gives, so that its wire form (``str()``) is valid: it is relayed, queued and
    reported in that spelling.
    """

    unquoted_dots: bool = False
    """Take an unquoted local part with a dot first, last or doubled
    (``taro..yamada@docomo.ne.jp``, ``hanako.@ezweb.ne.jp``, ``.c@x.example``),
    which RFC 5321 §4.1.2's Dot-string forbids and old Japanese carriers handed
    out. It is the local part its Quoted-string names: written back
    ``"taro..yamada"@docomo.ne.jp``, as Postfix relays it
    (``smtp_quote_rfc821_envelope = yes``). Postfix's smtpd takes it by default."""

    unbracketed: bool = False
    """Take a path without its angle brackets, ``MAIL FROM:a@b.example`` or ``RCPT
    TO: c@x.example SIZE=100``, as Postfix does with ``strict_rfc821_envelopes =
    no`` (its default). The address is one word, up to the first space, holding
    no ``<`` or ``>``; parameters follow after a space as they do a path; an empty
    one is refused (``MAIL FROM:`` is no null path: that is ``<>``)."""

    @classmethod
    def strict(cls) -> AddressPolicy:
        """RFC 5321 §4.1.2's grammar alone: the default."""
        return cls()

    @classmethod
    def postfix(cls) -> AddressPolicy:
        """What Postfix's smtpd takes by default: both leniencies."""
        return cls(unquoted_dots=True, unbracketed=True)


STRICT_ADDRESSES: Final = AddressPolicy()
"""The default address policy, RFC 5321's grammar alone."""


class AddressError(LocalProtocolError, ValueError):
    """An address, path or domain breaks RFC 5321 / RFC 6531 syntax or limits.

    It is a ``LocalProtocolError`` so that an application building a bad ``Mailbox``
    gets the error DESIGN.md promises; a server machine catches it while parsing peer
    input and answers 501 instead.
    """


def _show(text: str) -> str:
    """Repr of ``text`` cut short, so error messages stay one readable line."""
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "..."


def _check_chars(text: str, what: str) -> None:
    """Refuse what no address nor domain may hold: CR, LF, NUL and every other control
    (RFC 5321 §4.1.2 grammar, RFC 5198 §2), the line and paragraph separators and the
    bidi overrides and isolates (:data:`~smtpcore._textsafe.FORBIDDEN_IN_ADDRESSES`:
    raw in Return-Path or Received, U+2028 ends a field for a reader that splits lines
    as :meth:`str.splitlines` does), and lone surrogates.

    Run first on every input so that later steps (UTF-8 length, IDNA) never see a code
    point they cannot encode.
    """
    if _NOT_PRINTABLE_ASCII.search(text) is None:  # the everyday case: one C call
        return
    m = _FORBIDDEN.search(text)
    if m is not None:
        raise AddressError(f"{what} contains {_char_name(m.group())} at index {m.start()}")


def _char_name(char: str) -> str:
    """What a refused character is, for the error that names it."""
    if "\ud800" <= char <= "\udfff":
        return f"lone surrogate U+{ord(char):04X}"
    if char <= "\x9f":
        return _CHAR_NAMES.get(char, f"control character U+{ord(char):04X}")
    return f"separator or bidi control U+{ord(char):04X} (RFC 5198 §2)"


def _octets(text: str) -> int:
    """Length in octets on the wire (UTF-8, RFC 6531 §3.3); text already passed _check_chars."""
    return len(text.encode("utf-8"))


def quote_local_part(local_part: str) -> str:
    """The wire form of a local part: as is when a Dot-string, else a Quoted-string.

    RFC 5321 §4.1.2 asks senders not to quote needlessly, so only the two characters that
    qtextSMTP excludes (``"`` and ``\\``) are escaped as quoted-pairs.
    """
    if _DOT_STRING.fullmatch(local_part):
        return local_part
    escaped = local_part.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _check_local_part(local_part: str) -> None:
    """Characters of a local part. An empty one is valid: it is the empty
    Quoted-string ``""`` (RFC 5321 §4.1.2: ``DQUOTE *QcontentSMTP DQUOTE``). Its size is
    not limited (RFC 5321 §4.5.3.1: 64 octets is what every receiver must take, and
    SRS and VERP senders go past it): a peer's is bounded by
    :func:`check_received_path`."""
    _check_chars(local_part, "local part")


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


@dataclass(frozen=True, slots=True)
class Mailbox:
    """An envelope mailbox, ``local_part@domain`` (RFC 5321 §4.1.2, RFC 6531 §3.3).

    ``local_part`` is the unquoted value (``john doe``, not ``"john doe"``; ``""`` for
    the empty Quoted-string, written ``""@domain``); ``domain`` is a domain name
    (U-labels allowed) or an address literal, both kept as given.
    ``domain == ""`` is allowed only for the ``RCPT TO:<Postmaster>`` form (§4.1.1.3).
    Construction enforces the domain's limits (255 octets, labels of 63: DNS's own);
    the local part and the path may be longer than the 64 and 256 octets of §4.5.3.1,
    which are minimums every receiver must take, not limits (§4.5.3.1.1, §4.5.3.1.3),
    and go as they are, as Postfix sends them.
    """

    local_part: str
    domain: str

    def __post_init__(self) -> None:
        if not isinstance(self.local_part, str) or not isinstance(self.domain, str):
            raise TypeError("Mailbox local_part and domain must be str")
        if _is_simple(self.local_part, self.domain):
            return
        _check_local_part(self.local_part)
        if not self.domain:
            if self.local_part.lower() != "postmaster":
                raise AddressError(
                    "empty domain: only Postmaster may be given without one (RFC 5321 §4.1.1.3)"
                )
            return
        _validate_domain(self.domain, allow_trailing_dot=False)

    def __str__(self) -> str:
        if not self.domain:
            return self.local_part
        return f"{quote_local_part(self.local_part)}@{self.domain}"

    @property
    def is_ascii(self) -> bool:
        """False when the mailbox can only be sent with SMTPUTF8 (RFC 6531 §3.4)."""
        return self.local_part.isascii() and self.domain.isascii()

    @property
    def is_address_literal(self) -> bool:
        return self.domain.startswith("[")

    @property
    def ascii_domain(self) -> str:
        """The domain as DNS wants it: lowercase, A-labels; literals and "" unchanged."""
        if not self.domain or self.is_address_literal:
            return self.domain
        if self.domain.isascii():
            return self.domain.lower()
        return _validate_domain(self.domain, allow_trailing_dot=False)

    @property
    def a_label_form(self) -> Mailbox:
        """The same mailbox as a server without SMTPUTF8 can take it: a UTF-8 domain in
        A-labels, which name the same domain (RFC 5890 §2.3.2.1). Only a UTF-8 local
        part needs SMTPUTF8 (RFC 6531 §3.4): it has no ASCII form, so that mailbox,
        like an ASCII one, is returned as it is."""
        if self.domain.isascii() or not self.local_part.isascii():
            return self
        return Mailbox(self.local_part, self.ascii_domain)


def _is_simple(local: str, domain: str) -> bool:
    """True for the everyday ASCII mailbox that the full checks would accept."""
    return (
        _SIMPLE_LOCAL.fullmatch(local) is not None
        and _SIMPLE_DOMAIN.fullmatch(domain) is not None
        and simple_mailbox(local, domain) is not None
    )


def simple_mailbox(local: str, domain: str) -> Mailbox | None:
    """The mailbox of parts that matched the simple patterns (``_SIMPLE_LOCAL`` and
    ``_SIMPLE_DOMAIN``), or None when its domain is over 255 octets or its last label
    numeric: the rules such parts can still break. A mailbox has no length limit of its
    own (RFC 5321 §4.5.3.1); a received path's is :func:`check_received_path`'s.
    ``SIMPLE_PATH_PATTERN`` holds its parts to the same rules (a test holds the two
    equal), so the everyday-line parser builds its mailboxes without this call."""
    last_label = domain.rpartition(".")[2]
    if len(domain) > MAX_DOMAIN_OCTETS or (
        last_label.isascii() and last_label.isdigit()  # is_digits, in C
    ):
        return None
    # The parts are checked: skip Mailbox.__post_init__, and set the slots through their
    # descriptors (object.__setattr__ looks each name up first).
    mailbox = object.__new__(Mailbox)
    _SET_LOCAL_PART(mailbox, local)
    _SET_DOMAIN(mailbox, domain)
    return mailbox


_SET_LOCAL_PART: Final[Callable[[Mailbox, str], None]] = vars(Mailbox)["local_part"].__set__
_SET_DOMAIN: Final[Callable[[Mailbox, str], None]] = vars(Mailbox)["domain"].__set__


def _dot_string_problem(local: str) -> str:
    if local.startswith("."):
        return "starts with a dot"
    if local.endswith("."):
        return "ends with a dot"
    if ".." in local:
        return "has two dots in a row"
    for char in local:
        if char != "." and not _DOT_STRING.fullmatch(char):
            what = "whitespace" if char.isspace() else repr(char)
            return f"contains {what}, which must be quoted"
    return "is not a Dot-string"  # pragma: no cover - every failure is named above


def _scan_quoted(text: str) -> tuple[str, int]:
    """Read the Quoted-string at the start of ``text``; return its value and end index."""
    out: list[str] = []
    i = 1
    while i < len(text):
        char = text[i]
        if char == '"':
            return "".join(out), i + 1
        if char == "\\":
            if i + 1 >= len(text):
                break
            escaped = text[i + 1]
            if not " " <= escaped <= "~":
                raise AddressError(
                    "a backslash in a quoted local part must be followed by printable "
                    "ASCII or space (RFC 5321 quoted-pairSMTP)"
                )
            out.append(escaped)
            i += 2
            continue
        out.append(char)
        i += 1
    raise AddressError(f"unterminated quoted local part in {_show(text)}")


def parse_mailbox(text: str, *, policy: AddressPolicy = STRICT_ADDRESSES) -> Mailbox:
    """Parse ``Local-part "@" ( Domain / address-literal )`` without angle brackets.

    RFC 5321 §4.1.2 with RFC 6531 §3.3. A quoted local part is unquoted, so
    ``"john"@x.example`` and ``john@x.example`` give equal mailboxes; ``""@x.example``
    gives the local part ``""`` (a Quoted-string may be empty, a Dot-string not).
    ``policy`` may take more (:attr:`AddressPolicy.unquoted_dots`).
    """
    _check_chars(text, "mailbox")
    if text.startswith('"'):
        local, end = _scan_quoted(text)
        if not text.startswith("@", end):
            raise AddressError(f"expected '@' after the quoted local part in {_show(text)}")
        domain = text[end + 1 :]
    else:
        local, at, domain = text.partition("@")
        if not at:
            raise AddressError(f"missing '@' in {_show(text)}")
        if not local:
            raise AddressError(f"empty local part in {_show(text)}")
        if not _DOT_STRING.fullmatch(local) and not (
            policy.unquoted_dots and _LOOSE_DOT_STRING.fullmatch(local)
        ):
            problem = _dot_string_problem(local)
            raise AddressError(f"unquoted local part {_show(local)} {problem}")
    if not domain:
        raise AddressError(f"missing domain after '@' in {_show(text)}")
    if "@" in domain and not domain.startswith("["):
        raise AddressError(f"more than one unquoted '@' in {_show(text)}")
    return Mailbox(local, domain)


def _skip_source_route(inner: str) -> str:
    """Check and drop an A-d-l source route, return the mailbox after it (§4.1.2, App. C).

    The route MUST be accepted and SHOULD be ignored; At-domain holds a Domain, never a
    literal, so the first ':' ends it. Its domains are held to the grammar only: a
    numeric top label, refused in the mailbox, names nothing that is used here.
    """
    route, colon, rest = inner.partition(":")
    if not colon:
        raise AddressError("source route is not ended by ':'")
    for at_domain in route.split(","):
        if not at_domain.startswith("@"):
            raise AddressError(f"source route element {_show(at_domain)} does not start with '@'")
        if at_domain.startswith("@["):
            raise AddressError("a source route names domains, not address literals")
        try:
            _validate_domain(at_domain[1:], allow_trailing_dot=False, numeric_top=True)
        except AddressError as exc:
            raise AddressError(f"invalid domain in source route: {exc}") from None
    return rest


def parse_path(
    text: str,
    *,
    allow_null: bool = True,
    allow_postmaster: bool = False,
    policy: AddressPolicy = STRICT_ADDRESSES,
) -> Mailbox | None:
    """Parse the ``<...>`` after ``MAIL FROM:`` or ``RCPT TO:`` (RFC 5321 §4.1.2).

    ``<>`` (the null reverse-path) gives None when ``allow_null``; ``<Postmaster>``
    without a domain is allowed by ``allow_postmaster`` (RCPT TO, §4.1.1.3). A source
    route is checked and dropped, U-labels and all: whether the path needs SMTPUTF8
    (RFC 6531 §3.3) is a question for ``text``, not the mailbox. ``text`` must be the
    whole path: use ``split_path`` to cut the ESMTP parameters off first (and to
    bracket an unbracketed one, where ``policy`` takes it). ``policy`` may take
    local parts the grammar does not (:attr:`AddressPolicy.unquoted_dots`).
    """
    simple = _SIMPLE_PATH.fullmatch(text)
    if simple is not None:
        local, domain = simple.groups()
        mailbox = simple_mailbox(local, domain)
        if mailbox is not None:
            return mailbox  # the everyday path, checked in one match
    _check_chars(text, "path")
    if len(text) < 2 or not text.startswith("<") or not text.endswith(">"):
        raise AddressError(f"path {_show(text)} is not enclosed in angle brackets")
    inner = text[1:-1]
    if not inner:
        if allow_null:
            return None
        raise AddressError("the null path <> is not allowed here")
    if inner.startswith("@"):
        inner = _skip_source_route(inner)
    elif inner.lower() == "postmaster":
        if allow_postmaster:
            return Mailbox(inner, "")
        raise AddressError("<postmaster> without a domain is only allowed in RCPT TO")
    return parse_mailbox(inner, policy=policy)


def check_received_path(mailbox: Mailbox) -> None:
    """Refuse a received path longer than :data:`MAX_RECEIVED_PATH_OCTETS` in the
    longest form it is written in: its wire form (a local part with stray dots gains
    its quotes) or, its domain in A-labels, the one a ``Received:`` line and a next hop
    without SMTPUTF8 get. RFC 5321 §4.5.3.1.10 answers such a path ``501 Path too
    long``, as the command parsers do with this error."""
    octets = max(len(format_path(form).encode()) for form in (mailbox, mailbox.a_label_form))
    if octets > MAX_RECEIVED_PATH_OCTETS:
        raise AddressError(
            f"path too long: {octets} octets, over the {MAX_RECEIVED_PATH_OCTETS} "
            "taken here (RFC 5321 §4.5.3.1.10)"
        )


def split_path(text: str, *, policy: AddressPolicy = STRICT_ADDRESSES) -> tuple[str, str]:
    """Split ``"<a@b> SIZE=10"`` into ``("<a@b>", "SIZE=10")``.

    The path ends at the first '>' outside a quoted string or an address literal (a
    General-address-literal may hold '>'). Parameters must follow after a space
    (RFC 5321 §4.1.1.2 ``[SP Mail-parameters]``). Under
    :attr:`AddressPolicy.unbracketed`, ``"a@b SIZE=10"`` gives ``("<a@b>",
    "SIZE=10")``: the address is the first word, which may hold no ``<`` or ``>``.
    """
    if not text.startswith("<"):
        if policy.unbracketed and text:
            return _bracketed(text)
        raise AddressError(f"expected a path starting with '<' in {_show(text)}")
    close = text.find(">")
    if close > 0 and '"' not in text[:close] and "[" not in text[:close]:
        return _cut_after(text, close)  # nothing quoted or bracketed before it
    in_quotes = False
    i = 1
    while i < len(text):
        char = text[i]
        if in_quotes:
            if char == "\\":
                i += 1
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "[":
            close = text.find("]", i)
            if close < 0:
                break
            i = close
        elif char == ">":
            return _cut_after(text, i)
        i += 1
    raise AddressError(f"no closing '>' for the path in {_show(text)}")


def _bracketed(text: str) -> tuple[str, str]:
    """An unbracketed path, one word, in brackets, and what follows it: one reading
    only, so that no address can be taken for a parameter or part of one."""
    word, _, rest = text.partition(" ")
    if not word or "<" in word or ">" in word:
        raise AddressError(f"an address without brackets may hold no '<' or '>': {_show(text)}")
    return f"<{word}>", rest.lstrip(" ")


def _cut_after(text: str, close: int) -> tuple[str, str]:
    path, rest = text[: close + 1], text[close + 1 :]
    if rest and not rest.startswith(" "):
        raise AddressError(f"expected a space after the path in {_show(text)}")
    return path, rest.lstrip(" ")


def format_path(mailbox: Mailbox | None) -> str:
    """The wire form of a path: ``<>`` for None, else ``<mailbox>``."""
    return "<>" if mailbox is None else f"<{mailbox}>"


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
