"""Envelope addresses: RFC 5321 Mailbox and Path syntax, with the RFC 6531 UTF-8 additions.

This is the one place where text from ``MAIL FROM:``, ``RCPT TO:`` and ``EHLO`` becomes a
value, so every rule that keeps an address safe to write back on the wire is reached
from here: the grammar of RFC 5321 §4.1.2 and §4.1.3, the domain's size limits, and the
UTF8-non-ascii extensions of RFC 6531 §3.3 (non-ASCII in atext, qtextSMTP and U-labels).
The path parser and :class:`AddressPolicy` are defined here; the characters, domains
and :class:`Mailbox` in package-private modules, whose public names this one exports.

Internationalized domain labels are converted to A-labels in one module of their own,
which holds them to IDNA 2003's checks (the standard library's ``encodings.idna``) and takes the
four characters IDNA 2008 keeps (``ß``, final sigma, ZWJ and ZWNJ) the IDNA 2008 way: a
label the two standards would make different domains of is refused, never converted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from smtpcore import _address_syntax as _limits
from smtpcore._address_domains import (
    _validate_domain,
    is_address_literal,
    normalize_domain,
    normalize_host_name,
    parse_address_literal,
    parse_domain,
)
from smtpcore._address_mailbox import _SIMPLE_PATH, Mailbox, quote_local_part, simple_mailbox
from smtpcore._address_syntax import (
    _DOT_STRING,
    _LOOSE_DOT_STRING,
    AddressError,
    _check_chars,
    _show,
)

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


# The names moved into private modules keep the name callers import them by in
# ``__module__``, which tracebacks and pickling read (as ``_maildrop_errors`` does).
for _moved in (
    AddressError,
    Mailbox,
    is_address_literal,
    normalize_domain,
    normalize_host_name,
    parse_address_literal,
    parse_domain,
    quote_local_part,
):
    _moved.__module__ = __name__
del _moved

# MAX_DOMAIN_OCTETS, MAX_LABEL_OCTETS and MAX_RECEIVED_PATH_OCTETS are bound in
# _address_syntax, where the rules read them, and again here for their docstrings.
MAX_LOCAL_PART_OCTETS = 64
"""The local part every receiver must take, in octets (RFC 5321 §4.5.3.1.1). A minimum,
not a limit: §4.5.3.1 asks for no limit "to the maximum extent possible", and SRS and
VERP senders go past it, so a :class:`Mailbox` may be longer, bounded on receipt by
:data:`MAX_RECEIVED_PATH_OCTETS`; Postfix receives and sends such addresses alike."""
MAX_DOMAIN_OCTETS: Final = _limits.MAX_DOMAIN_OCTETS
"""The longest domain, in octets (RFC 5321 §4.5.3.1.2)."""
MAX_PATH_OCTETS = 256
"""The path every receiver must take, angle brackets included (RFC 5321 §4.5.3.1.3):
a minimum, as :data:`MAX_LOCAL_PART_OCTETS` is, not a limit on a :class:`Mailbox`."""
MAX_RECEIVED_PATH_OCTETS: Final = _limits.MAX_RECEIVED_PATH_OCTETS
"""The longest path a server takes in ``MAIL`` or ``RCPT``, angle brackets included, in
its longest written form (:func:`check_received_path`), whatever the command line's
extension allowances. A received path is written whole on one line of a message
or report, which RFC 5322 §2.1.1 and RFC 6532 §3.4 keep to 998 octets: ``Return-Path:
<path>`` (13 octets more), ``Final-Recipient: rfc822; address`` (23 more) and, the
longest, ``\tfor <path>; date`` in ``Received:`` (38 more); 900 leaves room, so a
next hop is never handed a line it must refuse (RFC 5321 §4.5.3.1.6)."""
MAX_LABEL_OCTETS: Final = _limits.MAX_LABEL_OCTETS
"""The longest label of a domain, in octets (RFC 1035 §2.3.4)."""


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
