"""Strategies for envelope addresses (RFC 5321 §4.1.2, §4.1.3, §4.5.3.1; RFC 6531 §3.3).

Valid values come out as :class:`~smtpcore.address.Mailbox` objects, which
cannot be built invalid; the wire form of a path comes out as text, so that
the near-valid and hostile paths a server must refuse can be drawn too.
"""

from __future__ import annotations

import ipaddress
import string
from typing import Final

from hypothesis import reject
from hypothesis import strategies as st

from smtpcore._hostname import MAX_HOSTNAME
from smtpcore.address import (
    MAX_DOMAIN_OCTETS,
    MAX_LOCAL_PART_OCTETS,
    MAX_PATH_OCTETS,
    AddressError,
    AddressPolicy,
    Mailbox,
    normalize_domain,
    parse_domain,
    parse_path,
)
from smtpcore.testing._regex import regex

__all__ = [
    "address_literals",
    "domains",
    "hostnames",
    "local_parts",
    "lenient_paths",
    "mailboxes",
    "paths",
]

ATEXT: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
_QTEXT_SPECIALS: Final = ' "\\(),:;<>@[]'
# U-labels IDNA 2003 leaves as they are (lowercase, no mapped characters), and some
# holding the characters IDNA 2008 keeps where IDNA 2003 maps them (UTS #46 §6): ß,
# final sigma, and a ZWJ after a virama (Sinhala "śrī", RFC 5892 appendix A.2).
_U_LABELS: Final = (
    "exämple",
    "例子",
    "bücher",
    "пример",
    "münchen",
    "日本語",
    "δοκιμή",
    "ñandú",
    "straße",
    "βόλος",
    "\u0dc1\u0dca\u200d\u0dbb\u0dd3",
)
# Letters nameprep leaves as they are, from several scripts, and ß and final sigma,
# which IDNA 2008 keeps anywhere in a label, to build U-labels from.
_U_LETTERS: Final = "äöüéñçåø日本語例子пример\u00df\u03c2"
_UTF8_LETTERS: Final = st.characters(
    categories=("Ll", "Lo"), min_codepoint=0xA0, max_codepoint=0x9FFF
)


def _atoms(*, utf8: bool) -> st.SearchStrategy[str]:
    chars = st.sampled_from(ATEXT)
    if utf8:
        chars = st.one_of(chars, _UTF8_LETTERS)
    return st.text(chars, min_size=1, max_size=10)


def local_parts(*, utf8: bool = False, quoted: bool = True) -> st.SearchStrategy[str]:
    """Valid local parts, unquoted (as :attr:`Mailbox.local_part` holds them).

    Dot-strings, and with ``quoted`` the contents of quoted strings (spaces,
    ``@``, ``"`` and ``\\`` among them, and the empty one, ``""`` on the wire);
    with ``utf8``, non-ASCII characters too (RFC 6531 §3.3). Most fit the
    64 octets of RFC 5321 §4.5.3.1.1, a minimum, not a limit: ``mailboxes``
    draws longer ones with ``at_limits``.

    >>> from smtpcore.testing import strategies as sst
    >>> sst.local_parts(quoted=False).example()  # doctest: +SKIP
    'j.doe+tag'
    """
    dot_string = st.lists(_atoms(utf8=utf8), min_size=1, max_size=4).map(".".join)
    options = [dot_string]
    if quoted:
        chars = st.one_of(st.sampled_from(ATEXT + _QTEXT_SPECIALS + "."))
        if utf8:
            chars = st.one_of(chars, _UTF8_LETTERS)
        options.append(st.text(chars, max_size=20))
    return st.one_of(options)


def address_literals(*, general: bool = False) -> st.SearchStrategy[str]:
    """``[192.0.2.1]`` and ``[IPv6:2001:db8::1]`` forms (RFC 5321 §4.1.3).

    With ``general``, also the ``[tag:content]`` form of other address types.

    >>> from hypothesis import given
    >>> from smtpcore.address import parse_domain
    >>> from smtpcore.testing import strategies as sst
    >>> sst.address_literals().example()  # doctest: +SKIP
    '[IPv6:2001:db8::1]'
    >>> @given(sst.address_literals())
    ... def test_literals_parse(literal):
    ...     assert parse_domain(literal)
    >>> test_literals_parse()
    """
    v4 = st.ip_addresses(v=4).map(lambda ip: f"[{ip}]")
    v6 = st.ip_addresses(v=6).map(_ipv6_literal)
    options = [v4, v6]
    if general:
        options.append(
            st.builds(
                lambda tag, content: f"[{tag}:{content}]",
                regex(r"[A-Za-z][A-Za-z0-9-]{0,6}[A-Za-z0-9]").filter(
                    lambda tag: tag.lower() != "ipv6"
                ),
                regex(r"[!-Z^-~]{1,20}"),
            )
        )
    return st.one_of(options)


def _ipv6_literal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    assert isinstance(ip, ipaddress.IPv6Address)
    mapped = ip.ipv4_mapped
    return f"[IPv6:::ffff:{mapped}]" if mapped is not None else f"[IPv6:{ip.compressed}]"


def _ldh_labels() -> st.SearchStrategy[str]:
    return regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?")


def _u_labels() -> st.SearchStrategy[str]:
    """U-labels: real words, and labels mixing ASCII, hyphens and letters of
    several scripts, each one IDNA 2003 takes as it is, or IDNA 2008 where they
    differ (ß, final sigma, a joiner after a virama)."""
    chars = string.ascii_lowercase + string.digits + _U_LETTERS
    built = regex(rf"[{chars}]([{chars}-]{{0,10}}[{chars}])?", alphabet=chars + "-")
    return st.one_of(st.sampled_from(_U_LABELS), built.filter(_is_domain))


def _a_labels() -> st.SearchStrategy[str]:
    """A-labels (``xn--``, RFC 5890 §2.3.2.1): internationalized labels in the ASCII
    form that travels without SMTPUTF8, converted as the parser converts them (the
    ``idna`` codec, IDNA 2003, would make ``straße`` another domain, ``strasse``)."""
    return _u_labels().filter(lambda text: not text.isascii()).map(normalize_domain)


def _is_domain(text: str) -> bool:
    try:
        parse_domain(text)
    except AddressError:
        return False
    return True


def domains(
    *, utf8: bool = False, literals: bool = False, long: bool = False
) -> st.SearchStrategy[str]:
    """Valid domains: LDH host names, A-labels among them (``xn--``, IDNA,
    RFC 5890), with ``utf8`` also U-labels, with ``literals`` also address
    literals, with ``long`` also names of 64 to 255 octets in labels of at most
    63 (RFC 1035 §2.3.4), the longest a host may call itself. The top label is
    never all digits.

    >>> sst.domains(utf8=True).example()  # doctest: +SKIP
    'mail.exämple.test'
    """
    label = st.one_of(_ldh_labels(), _a_labels())
    if utf8:
        label = st.one_of(label, _u_labels())
    top = regex(r"[a-z][a-z0-9]{0,5}")
    if utf8:
        top = st.one_of(top, _u_labels().filter(lambda text: not text.isdigit()))
    names = st.builds(
        lambda labels, last: ".".join([*labels, last]), st.lists(label, max_size=3), top
    )
    if long:
        names = st.one_of(names, _long_domains())
    if literals:
        return st.one_of(names, address_literals())
    return names


def hostnames() -> st.SearchStrategy[str]:
    """Names a server may call itself (the ``hostname`` its machines take): the
    domains of ``domains(utf8=True, long=True)``, and names of 64 to 255 UTF-8
    octets with multi-byte letters that no domain grammar takes, whose A-label
    form may run past 255 octets or that IDNA refuses (a label of over 63
    octets in A-label form, a leading hyphen), for what a server sends of its
    name in ASCII (RFC 6856 §2) to be cut and masked right.

    >>> sst.hostnames().example()  # doctest: +SKIP
    'aä日x.пример-.exämple'
    """
    return st.one_of(domains(utf8=True, long=True), _long_u_names())


@st.composite
def _long_u_names(draw: st.DrawFn) -> str:
    chars = string.ascii_lowercase + string.digits + "-" + _U_LETTERS
    labels = draw(st.lists(st.text(chars, min_size=20, max_size=40), min_size=4, max_size=12))
    octets = ".".join(labels).encode()[:MAX_HOSTNAME]
    return octets.decode("utf-8", "ignore").strip(".")


@st.composite
def _long_domains(draw: st.DrawFn) -> str:
    """LDH names of 64 to 255 octets, each label at most 63 (RFC 1035 §2.3.4); built
    here, so that an example prints as the name, not a call of a private helper."""
    length = draw(st.integers(64, MAX_DOMAIN_OCTETS))
    return _domain_of_length(length, draw(st.sampled_from(string.ascii_lowercase)))


def _domain_of_length(length: int, fill: str = "a") -> str:
    """An LDH domain of exactly ``length`` octets, in labels of at most 63."""
    labels = []
    while length > 63:
        labels.append(fill * 62)
        length -= 63
    labels.append(fill * length)
    return ".".join(labels)


def _at_limits() -> st.SearchStrategy[Mailbox]:
    """Mailboxes at and past the sizes of RFC 5321 §4.5.3.1: a 64-octet local part
    and a 256-octet path (minimums every receiver must take, not limits), local parts
    past them (SRS and VERP senders), and a domain of 255 octets (DNS's limit)."""
    return st.one_of(
        st.builds(Mailbox, st.just("l" * MAX_LOCAL_PART_OCTETS), domains()),
        _filling_the_path(),
        _past_the_minimums(),
        st.just(Mailbox("x", _domain_of_length(MAX_DOMAIN_OCTETS, "e"))),
    )


@st.composite
def _past_the_minimums(draw: st.DrawFn) -> Mailbox:
    """A mailbox with a local part of 65 to 200 octets, as SRS writes a forwarded
    sender's (``SRS0=hash=tt=orig.example=user``), its path past 256 octets at
    times: RFC 5321 §4.5.3.1 asks receivers to take them."""
    size = draw(st.integers(MAX_LOCAL_PART_OCTETS + 1, 200))
    local = ("SRS0=q8Zt=7K=customer-department.example=" + "l" * size)[:size]
    return Mailbox(local, draw(st.sampled_from(["fwd.example", _domain_of_length(200, "f")])))


_PATH_ROOM: Final = MAX_PATH_OCTETS - 3
"""The octets of a path left to the mailbox: all but the brackets and the "@"."""


@st.composite
def _filling_the_path(draw: st.DrawFn) -> Mailbox:
    """A mailbox of exactly 256 octets as a path, built here so that an example
    prints as ``Mailbox(...)`` rather than a call of a private helper."""
    size = draw(st.integers(1, MAX_LOCAL_PART_OCTETS))
    return Mailbox("l" * size, _domain_of_length(_PATH_ROOM - size, "d"))


@st.composite
def _wider_in_a_labels(draw: st.DrawFn) -> Mailbox:
    """A mailbox within a 256-octet path in U-labels but past it in A-labels (RFC 5321
    §4.5.3.1.3, a size every receiver must take): its ASCII form is longer than the
    path a receiver must take, and still valid. Each ``ü.`` is 3 octets, ``xn--tda.``
    8; 23 to 31 of them keep the domain within 255 octets in A-labels."""
    count = draw(st.integers(23, 31))
    a_path_octets = 1 + 8 * count + len("example") + 2
    local = "l" * draw(st.integers(MAX_PATH_OCTETS + 1 - a_path_octets, MAX_LOCAL_PART_OCTETS))
    return Mailbox(local, "ü." * count + "example")


def mailboxes(
    *, utf8: bool = False, quoted: bool = True, literals: bool = True, at_limits: bool = True
) -> st.SearchStrategy[Mailbox]:
    """Valid :class:`~smtpcore.address.Mailbox` values.

    ``utf8`` adds RFC 6531 local parts and U-label domains (a mailbox that
    needs ``SMTPUTF8`` has ``is_ascii`` false); ``quoted`` adds local parts
    that must be quoted; ``literals`` adds address-literal domains;
    ``at_limits`` adds mailboxes at and past the 64-octet local part and the
    256-octet path of RFC 5321 §4.5.3.1 (sizes every receiver must take, not
    limits), and at the 255-octet domain limit (with ``utf8``, also ones within a
    256-octet path in U-labels but past it in A-labels).

    >>> from hypothesis import given
    >>> from smtpcore.address import parse_mailbox
    >>> from smtpcore.testing import strategies as sst
    >>> @given(sst.mailboxes(utf8=True))
    ... def test_round_trip(mailbox):
    ...     assert parse_mailbox(str(mailbox)) == mailbox
    >>> test_round_trip()
    """
    strategy = _mailboxes_of(
        local_parts(utf8=utf8, quoted=quoted), domains(utf8=utf8, literals=literals)
    )
    if at_limits:
        strategy = st.one_of(strategy, _at_limits())
    if at_limits and utf8:
        strategy = st.one_of(strategy, _wider_in_a_labels())
    return strategy


@st.composite
def _mailboxes_of(
    draw: st.DrawFn, local_parts: st.SearchStrategy[str], domains: st.SearchStrategy[str]
) -> Mailbox:
    """``Mailbox(local_part, domain)`` built here, so that a failing example prints as
    the public constructor and pastes into ``@example``; a combination the
    constructor refuses is discarded with ``reject()``: Hypothesis
    drops the whole example, it does not draw this one again."""
    local_part, domain = draw(local_parts), draw(domains)
    try:
        return Mailbox(local_part, domain)
    except AddressError:
        reject()


# Paths no parser may take (RFC 5321 §4.1.2, RFC 1035 §2.3.4): a server must refuse
# them (501). A long local part or path is not among them: RFC 5321 §4.5.3.1's sizes
# are minimums a receiver must take.
_BROKEN_PATHS: Final = (
    "<x@" + _domain_of_length(MAX_DOMAIN_OCTETS + 1) + ">",
    "<" + "l" * 300 + "@" + _domain_of_length(MAX_DOMAIN_OCTETS + 1) + ">",
    "<x@" + "a" * 64 + ".example>",
    "<john@abc.example",
    "john@abc.example>",
    "<<john@abc.example>>",
    '<"unterminated@abc.example>',
    '<"a"b@abc.example>',
    "<john doe@abc.example>",
    "<john@@abc.example>",
    "<@abc.example>",
    "<john@>",
    "<john@abc..example>",
    "<john@-abc.example>",
    "<john@abc.example.>",
    "<john@192.0.2.1>",
    "<john@[300.0.2.1]>",
    "<john@[IPv6:zz::1]>",
    "<john@[IPv6:1::2::3]>",
    "<john@[192.0.2.1>",
    "<john\x00@abc.example>",
    "<john\r@abc.example>",
    "<john\x7f@abc.example>",
    "<john@ex\u3002ample>",
    # A-d-l = At-domain *( "," At-domain ), At-domain = "@" Domain: no address literal.
    "<@relay.example,@[192.0.2.1]:john@abc.example>",
)
# Paths a server must read with care: refused or taken by where they stand.
ODD_PATHS: Final = (
    "<jöhn@abc.example>",  # 553 without SMTPUTF8 (RFC 6531 §3.4), taken with it
    "<john@exämple.test>",
    "<@relay.example:john@abc.example>",  # a source route: accepted and ignored (§4.1.1.3)
    "<@bücher.example:john@abc.example>",  # 553 without SMTPUTF8 (RFC 6531 §3.3), as above
    "<postmaster>",  # RCPT TO only (§4.1.1.3)
    "<Postmaster>",
    "<>",  # MAIL FROM only
    # RFC 5321 §4.1.2 refuses these; Postfix takes them by default, and so does a server
    # under AddressPolicy.postfix(), the reference server's default.
    "<.john@abc.example>",
    "<john.@abc.example>",
    "<jo..hn@abc.example>",
    "john@abc.example",
)
_HOSTILE_PATHS: Final = _BROKEN_PATHS + ODD_PATHS


# What broken paths are made of: the path syntax's own punctuation, letters that
# need SMTPUTF8 or IDNA, and the control characters no path may hold.
_PATH_PIECES: Final = (
    *'<>@."\\[]:, az09-Zü日ßé\r\n\x00\t\x7f',
    "IPv6:",
    "xn--",
    "postmaster",
)


def paths(
    *, null: bool = True, utf8: bool = False, hostile: bool = False
) -> st.SearchStrategy[str]:
    """The wire form of a reverse- or forward-path, ``<local@domain>``.

    Valid by default (``null`` adds ``<>``, ``utf8`` adds RFC 6531 paths).
    ``hostile=True`` draws near-valid and broken paths as well: one octet
    over each limit, missing or doubled brackets, an unterminated quote,
    empty labels, an all-numeric top label, bad address literals, NUL, CR
    and DEL, source routes (which must be accepted and ignored), non-ASCII
    without SMTPUTF8, and the bare ``<postmaster>``.

    >>> sst.paths(hostile=True).example()  # doctest: +SKIP
    '<john@[IPv6:1::2::3]>'
    """
    valid = mailboxes(utf8=utf8).map(lambda mailbox: f"<{mailbox}>")
    options = [valid]
    if null:
        options.append(st.just("<>"))
    if hostile:
        options.append(st.sampled_from(_HOSTILE_PATHS))
        options.append(_pieced_paths())
    return st.one_of(options)


def _pieced_paths() -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(_PATH_PIECES), max_size=20).map(
        lambda pieces: "<" + "".join(pieces) + ">"
    )


_POSTFIX: Final = AddressPolicy.postfix()


def _unparsable(path: str) -> bool:
    """Refused under the strict policy and the lenient one alike (``path`` is
    bracketed: what the lenient one adds for unbracketed paths does not apply)."""
    for policy in (AddressPolicy.strict(), _POSTFIX):
        try:
            parse_path(path, allow_postmaster=True, policy=policy)
        except AddressError:
            continue
        return False
    return True


@st.composite
def _stray_dots(draw: st.DrawFn) -> str:
    """A local part of atoms with a dot first, last or doubled somewhere."""
    atoms = draw(st.lists(_atoms(utf8=False), min_size=1, max_size=4))
    dots = draw(st.lists(st.integers(1, 2), min_size=len(atoms) - 1, max_size=len(atoms) - 1))
    local = atoms[0] + "".join("." * n + atom for n, atom in zip(dots, atoms[1:], strict=True))
    local = draw(st.sampled_from(["", "."])) + local + draw(st.sampled_from(["", "."]))
    if ".." not in local and not local.startswith(".") and not local.endswith("."):
        local = draw(st.sampled_from([".", "..", ""])) + local + "."
    return local


def lenient_paths(*, bracketed: bool | None = None) -> st.SearchStrategy[str]:
    """Paths that RFC 5321 §4.1.2 refuses and Postfix takes by default, as a server
    does under :meth:`AddressPolicy.postfix() <smtpcore.address.AddressPolicy.postfix>`:
    an unquoted local part with a dot first, last or doubled
    (``<taro..yamada@docomo.ne.jp>``), and a path without its angle brackets
    (``hanako.@ezweb.ne.jp``, as ``MAIL FROM:`` would be followed by it). ``bracketed``
    True or False draws only the one form; None, both.

    >>> from hypothesis import given
    >>> from smtpcore.address import AddressPolicy, parse_path, split_path
    >>> from smtpcore.testing import strategies as sst
    >>> @given(sst.lenient_paths())
    ... def test_postfix_takes_them(text):
    ...     path, _ = split_path(text, policy=AddressPolicy.postfix())
    ...     assert parse_path(path, policy=AddressPolicy.postfix()) is not None
    >>> test_postfix_takes_them()
    """
    dotted = st.builds(
        lambda local, domain: f"<{local}@{domain}>", _stray_dots(), domains(literals=False)
    )
    bare = st.one_of(
        mailboxes(quoted=False, at_limits=False).map(str),
        dotted.map(lambda path: path[1:-1]),
    )
    if bracketed is None:
        return st.one_of(dotted, bare)
    return dotted if bracketed else bare


def broken_paths() -> st.SearchStrategy[str]:
    """Paths that :func:`~smtpcore.address.parse_path` refuses wherever they stand,
    so that a server must refuse them too: the broken part of ``paths(hostile=True)``,
    without its valid paths, source routes, ``<Postmaster>``, ``<>`` and non-ASCII
    paths (which SMTPUTF8 makes valid)."""
    return st.one_of(st.sampled_from(_BROKEN_PATHS), _pieced_paths().filter(_unparsable))
