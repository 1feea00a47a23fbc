"""Strategies for SMTP: ESMTP parameters, commands, whole client sessions, replies.

Sessions follow the state machine of RFC 5321 §4.1.4 (EHLO, optional
STARTTLS and AUTH, transactions ending in DATA or BDAT, RSET, NOOP, QUIT)
and come grouped the way a pipelining client writes them (RFC 2920 §3.1):
a group ends at EHLO, DATA, BDAT ... LAST, AUTH, STARTTLS, NOOP or QUIT, and
each answer to a 334 challenge is a group of its own (RFC 4954 §4).
"""

from __future__ import annotations

import base64
import functools
import itertools
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Final

from hypothesis import reject
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from smtpcore.address import Mailbox
from smtpcore.sasl import PlainClient
from smtpcore.smtp import (
    TEMPUNAVAIL,
    UNAVAILABLE,
    Auth,
    AuthResponse,
    Bdat,
    Command,
    Data,
    Ehlo,
    EndOfMessage,
    EnhancedStatus,
    Event,
    Expn,
    Help,
    Lhlo,
    Mail,
    MessageData,
    Noop,
    OriginalRecipient,
    Parameters,
    Quit,
    Rcpt,
    Reply,
    Rset,
    StartTls,
    Unavailable,
    Vrfy,
    Xclient,
    Xforward,
    xtext,
)
from smtpcore.smtp._commands import chunk_after, format_command
from smtpcore.smtp._dsn import DSNError, read_any_case_xtext
from smtpcore.smtp._forwarding import MAX_VALUE as _MAX_XTEXT_VALUE
from smtpcore.testing._addresses import _ATEXT, _ODD_PATHS, broken_paths, domains, mailboxes
from smtpcore.testing._content import message_contents
from smtpcore.testing._group_bytes import group_answer_points, group_write
from smtpcore.testing._numbers import malformed_numbers
from smtpcore.testing._regex import regex

__all__ = [
    "AUTH_MECHANISMS",
    "EXTENSIONS",
    "ClientSession",
    "command_lines",
    "commands",
    "mail_parameters",
    "parameter_texts",
    "rcpt_parameters",
    "replies",
    "reply_lines",
    "sessions",
    "xclients",
    "xforwards",
    "xtexts",
]

EXTENSIONS: Final = frozenset(
    {"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "CHUNKING", "DSN", "STARTTLS", "AUTH"}
)
"""The ESMTP extensions the session strategies use unless narrowed; :func:`sessions`
uses BINARYMIME and REQUIRETLS too where ``extensions`` names them."""

AUTH_MECHANISMS: Final = ("PLAIN", "LOGIN")
"""The SASL mechanisms whose exchange :func:`sessions` plays (RFC 4616; LOGIN as deployed)."""


# -- ESMTP parameters ---------------------------------------------------------------


def xtexts(*, hostile: bool = False) -> st.SearchStrategy[str]:
    """xtext values (RFC 3461 §4), as ``ENVID``, ``ORCPT`` and ``AUTH=`` carry them:
    text without control characters (§4.2, §4.4: printable characters only).

    Some escape octets that need no escape (``+41`` for "A"): xtext allows it, and a
    reader must take it. ``hostile=True`` adds malformed ones: lower-case or short
    hex after ``+``, a lone ``+``, a raw ``=``, an encoded CR LF or NUL.

    >>> from hypothesis import given
    >>> from smtpcore.smtp import decode_xtext, xtext
    >>> from smtpcore.testing import strategies as sst
    >>> sst.xtexts().example()  # doctest: +SKIP
    'caf+C3+A9'
    >>> @given(sst.xtexts())
    ... def test_xtext_round_trip(value):
    ...     text = decode_xtext(value)
    ...     assert decode_xtext(xtext(text)) == text
    >>> test_xtext_round_trip()
    """
    valid = (
        st.text(
            # RFC 3461 §4.4: printable once decoded (no control, format or separator).
            st.characters(
                min_codepoint=33, max_codepoint=0x2FF, exclude_categories=["Cc", "Cf", "Zl", "Zp"]
            ),
            max_size=20,
        )
        .flatmap(_xtext_forms)
        .filter(lambda value: 0 < len(value) <= 100)  # ENVID's limit (RFC 3461 §4.4)
    )
    if not hostile:
        return valid
    return st.one_of(valid, st.sampled_from(_MALFORMED_XTEXTS))


def _xtext_forms(text: str) -> st.SearchStrategy[str]:
    """``text`` as xtext (RFC 3461 §4): each octet that must be escaped escaped, and
    any other escaped or not, as drawn; mostly the canonical form :func:`xtext` writes."""
    octets = text.encode("utf-8")
    return st.one_of(
        st.just(xtext(text)),
        st.lists(st.booleans(), min_size=len(octets), max_size=len(octets)).map(
            lambda escape: "".join(
                _xtext_octet(octet, also=flag) for octet, flag in zip(octets, escape, strict=True)
            )
        ),
    )


def _xtext_octet(octet: int, *, also: bool) -> str:
    """One octet as xtext: ``+XX`` where it must be (RFC 3461 §4) or ``also``."""
    if also or not (33 <= octet <= 126) or octet in (43, 61):
        return f"+{octet:02X}"
    return chr(octet)


def _is_xtext_of_any_case(value: str) -> bool:
    try:
        read_any_case_xtext(value, "xtext")
    except DSNError:
        return False
    return True


_MALFORMED_XTEXTS: Final = ("+", "+2", "+zz", "+2b", "a=b", "x+", "+G0", "a+0D+0Ab", "+00")
_NOT_XTEXT: Final = tuple(value for value in _MALFORMED_XTEXTS if not _is_xtext_of_any_case(value))
"""The malformed values no server reads as xtext, whatever the case of its hex: what
even ``AUTH=`` is refused for (RFC 4954 §5 takes any xtext, as ``<>`` if need be)."""


def _numbers() -> st.SearchStrategy[str]:
    return st.integers(0, 10_000_000).map(str)  # within the usual 10 MB limit


def _hostile_numbers() -> st.SearchStrategy[str]:
    """Sizes a server must refuse (501 or 552): the shared malformed numbers in
    a ``size-value`` slot of at most 20 digits (RFC 1870 §4), no space in them,
    so that each is still an esmtp-value (RFC 5321 §4.1.2)."""
    return malformed_numbers(max_digits=_SIZE_DIGITS)


_SIZE_DIGITS: Final = 20
"""``size-value ::= 1*20DIGIT`` (RFC 1870 §4); BDAT's chunk size is read with no
more room (RFC 3030 §2 sets no bound; past 20 digits no octet count is real)."""


def mail_parameters(
    *, extensions: Collection[str] = EXTENSIONS, hostile: bool = False
) -> st.SearchStrategy[Parameters]:
    """``MAIL FROM`` parameters for the ``extensions`` offered.

    ``SIZE`` (RFC 1870), ``BODY=7BIT|8BITMIME`` (RFC 6152), ``SMTPUTF8``
    (RFC 6531), ``RET`` and ``ENVID`` (DSN, RFC 3461), ``AUTH=`` (RFC 4954
    §5, an xtext mailbox or ``<>``), and for extensions outside
    :data:`EXTENSIONS`, when named: ``BODY=BINARYMIME`` (RFC 3030 §3: the
    content must then go with BDAT), ``REQUIRETLS`` (RFC 8689 §4.1: offered
    over TLS only) and ``MT-PRIORITY`` from -9 to 9 (RFC 6710 §3, which
    smtpcore's server takes through ``extra_extensions``). ``hostile=True`` adds values the server
    must refuse with 501 or 555: signed, huge and non-ASCII-digit sizes,
    unknown bodies and keywords, bad xtext. Every value is still an
    esmtp-value (a :class:`~smtpcore.smtp.Parameters` can only hold those);
    :func:`command_lines` with ``hostile=True`` writes the rest.

    >>> from smtpcore.testing import strategies as sst
    >>> sst.mail_parameters(extensions={"SIZE", "DSN"}).example()  # doctest: +SKIP
    Parameters({'SIZE': '1024', 'RET': 'HDRS'})
    """
    offered = {name.upper() for name in extensions}
    # Values are as case-insensitive as the rest of the ABNF (RFC 5234 §2.3): 7bit, hdrs.
    choices: list[st.SearchStrategy[tuple[str, str | None]]] = []
    if "SIZE" in offered:
        choices.append(st.tuples(st.just("SIZE"), _numbers()))
    if "8BITMIME" in offered:
        choices.append(st.tuples(st.just("BODY"), st.sampled_from(["7BIT", "8BITMIME", "7bit"])))
    if "SMTPUTF8" in offered:
        choices.append(st.just(("SMTPUTF8", None)))
    if "DSN" in offered:
        choices.append(st.tuples(st.just("RET"), st.sampled_from(["FULL", "HDRS", "hdrs"])))
        choices.append(st.tuples(st.just("ENVID"), xtexts()))
    if "AUTH" in offered:
        choices.append(
            st.tuples(
                st.just("AUTH"),
                st.one_of(st.just("<>"), mailboxes(literals=False).map(lambda m: xtext(str(m)))),
            )
        )
    if "BINARYMIME" in offered:
        choices.append(st.just(("BODY", "BINARYMIME")))
    if "REQUIRETLS" in offered:
        choices.append(st.just(("REQUIRETLS", None)))
    if "MT-PRIORITY" in offered:  # priority-value = 0*1("-" / "+") DIGIT
        choices.append(st.tuples(st.just("MT-PRIORITY"), regex(r"[+-]?[0-9]")))
    if hostile:
        choices += _HOSTILE_MAIL_PARAMETERS
    return _parameters(choices)


_HOSTILE_MAIL_PARAMETERS: Final[list[st.SearchStrategy[tuple[str, str | None]]]] = [
    st.tuples(st.sampled_from(["SIZE", "size"]), _hostile_numbers()),
    st.tuples(st.just("BODY"), st.sampled_from(["BINARY", "8BIT", "X"])),
    st.tuples(st.just("RET"), st.sampled_from(["NONE", "FULL,HDRS"])),
    # A raw "=" is no esmtp-value at all: Parameters cannot hold it, and
    # command_lines(hostile=True) writes it on a line instead.
    st.tuples(st.just("ENVID"), st.sampled_from([v for v in _MALFORMED_XTEXTS if "=" not in v])),
    # AUTH=: RFC 4954 §5, any xtext taken; one that is no xtext refused
    st.tuples(st.just("AUTH"), st.sampled_from([v for v in _NOT_XTEXT if "=" not in v])),
    st.tuples(st.sampled_from(["X-FOO", "NOTIFY", "ORCPT"]), st.just("1")),
    st.tuples(st.sampled_from(["SIZE", "BODY", "RET", "ENVID"]), st.none()),
]
"""MAIL parameters a server must refuse (501 or 555), whatever it offers."""


def rcpt_parameters(
    *, extensions: Collection[str] = EXTENSIONS, hostile: bool = False
) -> st.SearchStrategy[Parameters]:
    """``RCPT TO`` parameters: DSN's ``NOTIFY`` and ``ORCPT`` (RFC 3461 §4.1, §4.2).

    An internationalized ORCPT address is sent as ``utf-8`` with
    utf-8-addr-xtext (RFC 6533 §3), an ASCII one as ``rfc822`` with xtext.
    ``hostile=True`` adds ``NOTIFY=NEVER,SUCCESS``, unknown events, ORCPT
    without its address type or with bad xtext, and unknown keywords.

    >>> from hypothesis import given
    >>> from smtpcore.smtp import BadCommand, Reply, ServerConnection
    >>> from smtpcore.testing import run_server
    >>> from smtpcore.testing import strategies as sst
    >>> sst.rcpt_parameters().example()  # doctest: +SKIP
    Parameters({'NOTIFY': 'SUCCESS,DELAY', 'ORCPT': 'rfc822;bob@pqr.example'})
    >>> @given(sst.rcpt_parameters())
    ... def test_a_dsn_server_accepts_them(params):
    ...     server = ServerConnection("mx.test", dsn=True)
    ...     server.send(Reply(220, "mx.test ESMTP"))
    ...     lines = f"EHLO c.test\\r\\nMAIL FROM:<>\\r\\nRCPT TO:<bob@pqr.example> {params}\\r\\n"
    ...     events, _ = run_server(server, lines.encode())
    ...     assert not any(isinstance(event, BadCommand) for event in events)
    >>> test_a_dsn_server_accepts_them()
    """
    offered = {name.upper() for name in extensions}
    choices: list[st.SearchStrategy[tuple[str, str | None]]] = []
    if "DSN" in offered:
        choices.append(
            st.tuples(
                st.just("NOTIFY"),
                st.one_of(
                    st.just("NEVER"),
                    st.lists(
                        st.sampled_from(["SUCCESS", "FAILURE", "DELAY"]), min_size=1, unique=True
                    ).map(",".join),
                ),
            )
        )
        choices.append(
            st.tuples(
                st.just("ORCPT"),
                mailboxes(utf8=True, literals=False).map(
                    lambda m: OriginalRecipient.of(str(m)).to_parameter()
                ),
            )
        )
    if hostile:
        choices += _HOSTILE_RCPT_PARAMETERS
    return _parameters(choices)


_HOSTILE_RCPT_PARAMETERS: Final[list[st.SearchStrategy[tuple[str, str | None]]]] = [
    st.tuples(
        st.just("NOTIFY"),
        st.sampled_from(["NEVER,SUCCESS", "SOMETIMES", "SUCCESS,SUCCESS"]),
    ),
    st.tuples(st.just("ORCPT"), st.sampled_from(["bob@pqr.example", "rfc822;+zz", ";x"])),
    st.tuples(st.sampled_from(["X-FOO", "SIZE", "BODY"]), st.just("1")),
]
"""RCPT parameters a server must refuse (501 or 555), whatever it offers."""


_HOSTILE_KEYWORDS: Final = ("-X", "X_Y", "", "\u00e9", "size", "Body", "notify", "X-")
"""Keywords RFC 5321 §4.1.2 refuses (``esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")``),
and known ones in other cases, which must be read as the same keyword."""
_HOSTILE_VALUES: Final = ("", "a=b", "x y", "\u00e9t\u00e9", "\t", "1 ", "=")
"""Values no esmtp-value is: empty, with ``=``, a space, a tab or non-ASCII (RFC 5321 §4.1.2;
RFC 6531 §3.3 allows UTF-8 only where SMTPUTF8 says so)."""
_PRINTABLE: Final = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=8)


def _hostile_tokens(offered: Collection[str]) -> st.SearchStrategy[str]:
    keyword = st.one_of(
        st.sampled_from(_HOSTILE_KEYWORDS),
        st.sampled_from(["SIZE", "BODY", "NOTIFY", "ORCPT", "RET", "ENVID", "SMTPUTF8", "AUTH"]),
        regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,6}"),
    )
    value = st.one_of(st.none(), st.sampled_from(_HOSTILE_VALUES), _PRINTABLE)
    return st.one_of(
        st.builds(lambda k, v: k if v is None else f"{k}={v}", keyword, value),
        mail_parameters(extensions=offered, hostile=True).map(str).filter(bool),
    )


def parameter_texts(
    *, extensions: Collection[str] = EXTENSIONS, rcpt: bool = False, hostile: bool = False
) -> st.SearchStrategy[str]:
    """The parameters of a ``MAIL`` line (``RCPT`` with ``rcpt``) as a client
    writes them, a space before each: ``""`` or ``" SIZE=1024 BODY=8BITMIME"``.

    Valid by default (:func:`mail_parameters` or :func:`rcpt_parameters` on
    the wire). ``hostile=True`` writes what a
    :class:`~smtpcore.smtp.Parameters` cannot hold and a server must refuse
    with 501 or 555, or read with care: keywords that are not esmtp-keywords
    (``-X``, ``X_Y``, empty, non-ASCII), values with ``=``, spaces, tabs or
    non-ASCII, empty values, a keyword given twice in different cases, two
    spaces or none between parameters, a trailing space.

    >>> from hypothesis import given
    >>> from smtpcore.smtp import BadCommand, Reply, ServerConnection
    >>> from smtpcore.testing import run_server
    >>> from smtpcore.testing import strategies as sst
    >>> sst.parameter_texts(hostile=True).example()  # doctest: +SKIP
    ' SIZE=1 size=2  X_Y=a=b'
    >>> @given(sst.parameter_texts(hostile=True))
    ... def test_each_mail_line_gets_one_reply(params):
    ...     server = ServerConnection("mx.test")
    ...     server.send(Reply(220, "mx.test ESMTP"))
    ...     run_server(server, b"EHLO c.test\\r\\n")
    ...     line = f"MAIL FROM:<john@abc.example>{params}\\r\\n"
    ...     events, out = run_server(server, line.encode())
    ...     assert out.count(b"\\r\\n") == 1
    >>> test_each_mail_line_gets_one_reply()
    """
    drawn = (rcpt_parameters if rcpt else mail_parameters)(extensions=extensions)
    valid = drawn.map(
        lambda params: "".join(f" {token}" for token in str(params).split(" ") if token)
    )
    if not hostile:
        return valid
    offered = frozenset(name.upper() for name in extensions)
    separators = st.sampled_from([" ", " ", " ", "  ", "", "\t"])
    hostile_text = st.builds(
        lambda tokens, seps, tail: (
            "".join(s + t for s, t in zip(seps, tokens, strict=False)) + tail
        ),
        st.lists(_hostile_tokens(offered), min_size=1, max_size=4),
        st.lists(separators, min_size=4, max_size=4),
        st.sampled_from(["", "", "", " "]),
    )
    return st.one_of(valid, hostile_text)


def _parameters(
    choices: list[st.SearchStrategy[tuple[str, str | None]]], *, min_size: int = 0
) -> st.SearchStrategy[Parameters]:
    if not choices:
        return st.just(Parameters())
    return st.lists(
        st.one_of(choices), min_size=min_size, max_size=4, unique_by=lambda item: item[0].upper()
    ).map(Parameters)


# -- single commands ----------------------------------------------------------------


_QTEXT: Final = "".join(chr(code) for code in range(32, 127) if chr(code) not in '"\\')
_STRINGS: Final = st.one_of(
    st.text(st.sampled_from(_ATEXT), min_size=1, max_size=20),
    st.lists(
        st.one_of(
            st.sampled_from(_QTEXT),
            st.characters(min_codepoint=32, max_codepoint=126).map(lambda char: "\\" + char),
        ),
        max_size=15,
    ).map(lambda parts: '"' + "".join(parts) + '"'),
)
"""RFC 5321 §4.1.2 String = Atom / Quoted-string, the argument of VRFY, EXPN, HELP
and NOOP (§4.1.1.6 to §4.1.1.9): atext only, or qtextSMTP and quoted pairs in quotes."""


@st.composite
def _mails(
    draw: st.DrawFn,
    senders: st.SearchStrategy[Mailbox | None],
    parameters: st.SearchStrategy[Parameters],
) -> Mail:
    """MAIL, with SMTPUTF8 for a UTF-8 reverse-path (RFC 6531 §3.4); built here, so
    that a failing example prints as ``Mail(...)``, public names alone."""
    sender, params = draw(senders), draw(parameters)
    if sender is not None and not sender.is_ascii and "SMTPUTF8" not in params:
        params = Parameters({**params, "SMTPUTF8": None})
    return Mail(sender, params)


def commands(
    *, extensions: Collection[str] = EXTENSIONS, lmtp: bool = False
) -> st.SearchStrategy[Command]:
    """Any one valid SMTP command event, whatever the state it would be legal in.

    ``extensions`` limits parameters and the commands of extensions
    (``BDAT`` needs CHUNKING, ``STARTTLS``, ``AUTH``, and, outside
    :data:`EXTENSIONS`, ``XCLIENT`` and ``XFORWARD``: :func:`xclients`,
    :func:`xforwards`); ``lmtp`` uses LHLO for
    the greeting command (RFC 2033). NOOP, HELP, VRFY and EXPN take an RFC
    5321 String (an atom or a quoted string, §4.1.2); VRFY and EXPN may
    take a mailbox instead, as clients use them (§3.5).

    >>> from hypothesis import given
    >>> from smtpcore.smtp import Auth, Bdat, StartTls
    >>> from smtpcore.testing import strategies as sst
    >>> sst.commands(extensions={"SIZE"}).example()  # doctest: +SKIP
    Rcpt(recipient=Mailbox(local_part='bob', domain='pqr.example'), params=Parameters({}))
    >>> @given(sst.commands(extensions={"8BITMIME"}))
    ... def test_no_command_of_an_extension_not_offered(command):
    ...     assert not isinstance(command, Bdat | StartTls | Auth)
    >>> test_no_command_of_an_extension_not_offered()
    """
    offered = {name.upper() for name in extensions}
    utf8 = "SMTPUTF8" in offered
    hello = st.builds(Lhlo if lmtp else Ehlo, domains())
    options: list[st.SearchStrategy[Command]] = [
        hello,
        _mails(st.none() | mailboxes(utf8=utf8), mail_parameters(extensions=offered)),
        st.builds(Rcpt, mailboxes(utf8=utf8), rcpt_parameters(extensions=offered)),
        st.just(Data()),
        st.just(Rset()),
        st.builds(Noop, st.just("") | _STRINGS),
        st.just(Quit()),
        st.builds(Vrfy, _STRINGS | mailboxes().map(str)),
        st.builds(Expn, _STRINGS | mailboxes().map(str)),
        st.builds(Help, st.just("") | _STRINGS),
    ]
    if "CHUNKING" in offered:
        options.append(st.builds(Bdat, st.integers(0, 10_000), st.booleans()))
    if "STARTTLS" in offered:
        options.append(st.just(StartTls()))
    if "AUTH" in offered:
        options.append(st.builds(Auth, st.just("PLAIN"), st.none() | st.binary(max_size=40)))
    if "XCLIENT" in offered:
        options.append(xclients())
    if "XFORWARD" in offered:
        options.append(xforwards())
    return st.one_of(options)


# -- XCLIENT and XFORWARD (Postfix) ----------------------------------------------------


_LABEL: Final = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,20}[A-Za-z0-9_])?"
_HOST_NAMES: Final = (
    regex(rf"{_LABEL}(?:\.{_LABEL}){{0,3}}")
    # Postfix's valid_hostname(): no name that would pass for an address.
    .filter(lambda name: not set(name) <= set("0123456789."))
)
"""Host names as Postfix checks them: labels of letters, digits, ``-`` and ``_``
(which it lets through), not all digits, no final dot."""


def _host_address(address: IPv4Address | IPv6Address) -> bool:
    """Not in 0.0.0.0/8 but 0.0.0.0, which Postfix's ``valid_ipv4_hostaddr()`` refuses
    (an IPv4-mapped address is written as the IPv4 one it maps)."""
    ipv4 = address if isinstance(address, IPv4Address) else address.ipv4_mapped
    return ipv4 is None or ipv4.packed[0] != 0 or int(ipv4) == 0


_ADDRESSES: Final = st.ip_addresses().filter(_host_address).map(str)
"""IPv4 and IPv6 addresses Postfix takes: the events write an IPv6 one ``IPV6:address``."""
_PORTS: Final = st.integers(0, 65535)
_VALUE_TEXTS: Final = st.text(
    st.characters(exclude_categories=["Cc", "Cs", "Zs", "Zl", "Zp", "Cf", "Co", "Cn"]),
    min_size=1,
    max_size=40,
).filter(
    lambda text: (
        text.isprintable()
        and not any(char.isspace() for char in text)
        and len(xtext(text)) <= _MAX_XTEXT_VALUE
    )
)
"""Printable text without spaces, ``+`` and ``=`` included (xtext encodes those), and
non-ASCII: at most 255 octets as xtext, Postfix's limit (``xclient_cmd``)."""
_ASCII_TEXTS: Final = st.text(
    st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40
)
"""Printable US-ASCII without spaces, at most 40 characters (PROTO's limit is 64
octets): XFORWARD_README note 1 forbids controls, non-ASCII and white space."""


def _maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An attribute left out, ``[UNAVAILABLE]``, or a value."""
    unavailable: st.SearchStrategy[Unavailable] = st.just(UNAVAILABLE)
    return st.none() | unavailable | values


def _forwarding(
    command: Callable[..., Xclient | Xforward], **fields: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """Commands with at least one attribute, on one command line (RFC 5321 §4.5.3.1.4)."""
    attributes = st.fixed_dictionaries(fields).filter(
        lambda drawn: any(value is not None for value in drawn.values())
    )
    return _forwarding_commands(command, attributes)


@st.composite
def _forwarding_commands(
    draw: st.DrawFn,
    command: Callable[..., Xclient | Xforward],
    attributes: st.SearchStrategy[dict[str, Any]],
) -> Xclient | Xforward:
    """``command`` built here from the attributes, so that a failing example prints
    as ``Xclient(...)``, public names alone; one over a command line (RFC 5321
    §4.5.3.1.4) is discarded with ``reject()``, which drops the whole example."""
    built = command(**draw(attributes))
    if len(built.to_line()) > _MAX_COMMAND_LINE - 2:
        reject()
    return built


def xclients() -> st.SearchStrategy[Xclient]:
    """``XCLIENT`` commands (Postfix's XCLIENT_README), as a trusted proxy sends them.

    Each names at least one attribute, any of them but PROTO ``[UNAVAILABLE]``
    and NAME ``[TEMPUNAVAIL]`` too, and fits one command line. NAME is a host
    name as Postfix checks it (letters, digits, ``-`` and ``_``, not all
    digits, no final dot), ADDR and DESTADDR an IPv4 address (none in
    0.0.0.0/8 but 0.0.0.0) or ``IPV6:`` and an IPv6 one on the wire, PROTO
    ``SMTP`` or ``ESMTP``, HELO and LOGIN printable text without spaces, at
    most 255 octets as xtext. A server that offers XCLIENT to the client
    (current Postfix, smtpcore's) accepts each one.

    >>> from hypothesis import given
    >>> from smtpcore.smtp import Reply, ServerConnection
    >>> from smtpcore.testing import run_server
    >>> from smtpcore.testing import strategies as sst
    >>> @given(sst.xclients())
    ... def test_a_trusted_proxy_is_heard(command):
    ...     server = ServerConnection("mx.test", xclient=True, trusted_forwarder=True)
    ...     server.send(Reply(220, "mx.test ESMTP"))
    ...     events, _ = run_server(server, f"{command.to_line()}\\r\\n".encode())
    ...     assert events[-1] == command
    >>> test_a_trusted_proxy_is_heard()
    """
    tempunavail: st.SearchStrategy[Unavailable] = st.just(TEMPUNAVAIL)
    return _forwarding(
        Xclient,
        name=_maybe(_HOST_NAMES) | tempunavail,
        addr=_maybe(_ADDRESSES),
        port=_maybe(_PORTS),
        proto=st.none() | st.sampled_from(["SMTP", "ESMTP"]),  # never [UNAVAILABLE]
        helo=_maybe(_VALUE_TEXTS),
        login=_maybe(_VALUE_TEXTS),
        destaddr=_maybe(_ADDRESSES),
        destport=_maybe(_PORTS),
    )


def xforwards() -> st.SearchStrategy[Xforward]:
    """``XFORWARD`` commands (Postfix's XFORWARD_README), as a content filter sends them.

    Each names at least one attribute, any of them ``[UNAVAILABLE]``, and
    fits one command line. NAME and ADDR are as in :func:`xclients` (what
    current Postfix takes: it answers ``501`` to a NAME that is all digits or
    ends in a dot, and to an ADDR that is no IP address or is in 0.0.0.0/8),
    PROTO and HELO and IDENT printable US-ASCII without spaces (XFORWARD_README
    note 1), PROTO of at most 64 octets, SOURCE ``LOCAL`` or ``REMOTE``. A
    server that offers XFORWARD to the client (current Postfix, smtpcore's)
    accepts each one.

    >>> from hypothesis import given
    >>> from smtpcore.testing import strategies as sst
    >>> sst.xforwards().example()  # doctest: +SKIP
    Xforward(name='relay.abc.example', addr='2001:db8::7', port=None, proto='ESMTP', ...)
    >>> @given(sst.xforwards())
    ... def test_an_ipv6_address_is_written_with_its_prefix(command):
    ...     address = command.attributes.get("ADDR")
    ...     if isinstance(address, str) and ":" in address:
    ...         assert f"ADDR=IPV6:{address}" in command.to_line()
    >>> test_an_ipv6_address_is_written_with_its_prefix()
    """
    return _forwarding(
        Xforward,
        name=_maybe(_HOST_NAMES),
        addr=_maybe(_ADDRESSES),
        port=_maybe(_PORTS),
        proto=_maybe(_ASCII_TEXTS),
        helo=_maybe(_ASCII_TEXTS),
        ident=_maybe(_ASCII_TEXTS),
        source=_maybe(st.sampled_from(["LOCAL", "REMOTE"])),
    )


_HOSTILE_LINES: Final = (
    b"EHLO\r\n",
    b"HELO\r\n",
    b"MAIL FROM:\r\n",  # no path at all: the null one is <>
    b"MAIL TO:<john@abc.example>\r\n",
    b"RCPT TO:<brendon@pqr.example> NOTIFY\r\n",
    b"RCPT TO:<brendon@pqr.example> =1\r\n",
    b"MAIL FROM:<john@abc.example> ENVID=a=b\r\n",
    b"DATA extra\r\n",
    b"BDAT\r\n",
    b"BDAT -1\r\n",
    b"BDAT 0 2\r\n",  # refused with no chunk to skip: the next line is a command
    b"BDAT 99999999999999999999999\r\n",
    b"BDAT 0 LAS\r\n",
    b"QUIT now\r\n",
    b"NOOP\nNOOP\r\n",  # a bare LF inside a line: only CRLF ends one (RFC 5321 §2.3.8)
    b"NOOP\rNOOP\r\n",
    b"NOOP\r\r\n",
    b"NOOP \x00\r\n",
    b"\x00\r\n",
    b"\r\n",
    b" \r\n",
    b"\xff\xfe\r\n",
    b"EHLO \xc3\x28\r\n",
    b"AUTH\r\n",
    b"AUTH PLAIN not-base64!\r\n",
    b"AUTH PLAIN =\r\n",
    b"STARTTLS now\r\n",
    b"XEXCH50 1 2\r\n",
    b"GET / HTTP/1.1\r\n",
    b"VRFY\r\n",
    b"EXPN\r\n",
    b"x" * 510 + b"\r\n",
    b"x" * 511 + b"\r\n",
)
"""Broken lines: each one, in any state, a server must refuse with a 5xx reply."""
_LENIENT_LINES: Final = (
    # RFC 5321 §3.3 allows no space around the colon, but it "has been a common
    # error": Postfix (and smtpcore) take these, stricter servers refuse them.
    b"MAIL FROM: <john@abc.example>\r\n",
    b"MAIL  FROM:<john@abc.example>\r\n",
    # A path without its brackets: RFC 5321 §4.1.2 refuses it, Postfix takes it
    # (strict_rfc821_envelopes = no, its default), as smtpcore's reference server does.
    b"MAIL FROM:john@abc.example\r\n",
    b"MAIL FROM: john@abc.example SIZE=100\r\n",
    # Over 512 octets: the extensions in force may add room (§4.5.3.1.4), and a
    # server may take longer lines still.
    b"NOOP " + b"x" * 600 + b"\r\n",
)
"""Near-valid lines a server may take or refuse (one reply each, either way)."""


def _broken_lines(offered: Collection[str]) -> st.SearchStrategy[bytes]:
    """Lines a server must refuse with a 5xx reply wherever they come, the only
    ones :func:`sessions` slips in: its refusals must not change the session."""
    return st.one_of(
        st.sampled_from(_HOSTILE_LINES),
        st.builds(
            lambda verb, path: f"{verb}:{path}\r\n".encode("utf-8", "surrogateescape"),
            st.sampled_from(["MAIL FROM", "RCPT TO"]),
            broken_paths(),
        ),
        st.builds(
            lambda verb, params: f"{verb} {params}\r\n".encode(),
            st.just("MAIL FROM:<john@abc.example>"),
            _parameters(_HOSTILE_MAIL_PARAMETERS, min_size=1),
        ),
        st.builds(
            lambda verb, params: f"{verb} {params}\r\n".encode(),
            st.just("RCPT TO:<brendon@pqr.example>"),
            _parameters(_HOSTILE_RCPT_PARAMETERS, min_size=1),
        ),
        _number_lines(),
        _number_lines(),  # twice the weight: numbers on the wire are where parsers crash
    )


def _near_valid_lines() -> st.SearchStrategy[bytes]:
    """Lines a server may take or refuse: lenient syntax, and paths that are
    valid in one place and not in another (source routes, ``<Postmaster>``, ``<>``,
    non-ASCII ones that need SMTPUTF8)."""
    return st.one_of(
        st.sampled_from(_LENIENT_LINES),
        st.builds(
            lambda verb, path: f"{verb}:{path}\r\n".encode(),
            st.sampled_from(["MAIL FROM", "RCPT TO"]),
            st.sampled_from(_ODD_PATHS),
        ),
    )


_VERB: Final = re.compile(rb"MAIL FROM:|RCPT TO:|[A-Z]+")
_CASES: Final[tuple[Callable[[bytes], bytes], ...]] = (
    bytes.upper,
    bytes.upper,
    bytes.lower,
    bytes.title,
)


def _in_case(line: bytes, case: Callable[[bytes], bytes]) -> bytes:
    """``line`` with its verb (and MAIL's ``FROM:``, RCPT's ``TO:``) in another case:
    verbs are case-insensitive (RFC 5321 §2.4)."""
    verb = _VERB.match(line)
    assert verb is not None  # format_command writes verbs in upper case
    return case(verb.group()) + line[verb.end() :]


@functools.cache
def _session_lines(offered: frozenset[str]) -> st.SearchStrategy[bytes]:
    """Broken lines that leave a session going, and its transaction as it was: no BDAT
    line at all. One whose size cannot be read ends the session (no one knows where its
    chunk ends, RFC 3030 §2); any other refused inside a transaction fails the
    transaction (§2 again), so the commands after it in the group get 503, not the
    replies the group's answer points count. Built once per offer, as :func:`sessions`
    draws from it inside its own draws."""
    return _broken_lines(offered).filter(
        lambda line: chunk_after(line) == 0 and line[:4].upper() != b"BDAT"
    )


def _number_lines() -> st.SearchStrategy[bytes]:
    """Lines that carry a number a server must read as ASCII digits only."""
    return st.builds(
        lambda line, digits: line.format(digits).encode(),
        st.sampled_from(
            ["BDAT {}\r\n", "BDAT {} LAST\r\n", "MAIL FROM:<john@abc.example> SIZE={}\r\n"]
        ),
        _hostile_numbers(),
    )


def command_lines(
    *, extensions: Collection[str] = EXTENSIONS, hostile: bool = False
) -> st.SearchStrategy[bytes]:
    """One command line as a client writes it, CRLF included.

    Valid by default: the wire form of :func:`commands`, its verb in upper,
    lower or mixed case (verbs are case-insensitive, RFC 5321 §2.4).

    ``hostile=True`` adds broken lines, which a server must refuse with a
    5xx reply in any state and survive: missing arguments, bare CR or LF
    inside a line, NUL, invalid UTF-8, unknown verbs at and over the
    512-octet limit, broken paths, ESMTP parameters a server must refuse,
    and in ``SIZE=`` and BDAT's chunk size numbers that are none (signed as
    ``-1`` or ``-0``, digits that are not ASCII, trailing garbage, over 20
    digits), the same hostile numbers :func:`hostile_bytes` and
    :func:`pop3_command_lines` use. A ``BDAT`` line whose chunk size cannot be
    read is among them: no one knows where its chunk ends, so a server may
    instead answer ``421`` and close (RFC 3030 §2; Postfix, smtpcore), and
    :func:`sessions` leaves such lines out. And a few near-valid lines a server may
    take or refuse, as long as it answers each once: a space after the
    colon (§3.3 forbids it, many servers allow it), a NOOP over 512 octets
    (extensions add room, §4.5.3.1.4), and paths valid in one place only: a
    source route (accepted and ignored, §4.1.1.3), ``<Postmaster>`` (RCPT
    only), ``<>`` (MAIL only), non-ASCII paths (with SMTPUTF8 only).

    >>> sst.command_lines(hostile=True).example()  # doctest: +SKIP
    b'MAIL FROM:<john@abc.example> SIZE=\\xd9\\xa3\\r\\n'
    """
    valid = st.builds(
        _in_case, commands(extensions=extensions).map(format_command), st.sampled_from(_CASES)
    )
    if not hostile:
        return valid
    return st.one_of(valid, _broken_lines(extensions), _near_valid_lines())


# -- whole client sessions ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientSession:
    """A client's side of a whole SMTP session, as the groups it writes.

    Each group goes out in one write and is answered before the next one is
    sent (RFC 2920 §3.1). A group is a tuple of events: commands, or a
    message's content as :class:`~smtpcore.smtp.MessageData` and
    :class:`~smtpcore.smtp.EndOfMessage` after ``DATA`` (perhaps followed by
    the commands pipelined behind its end), or ``Bdat`` and its
    octets, or one :class:`~smtpcore.smtp.AuthResponse` answering a 334
    challenge (``*`` when it cancels the exchange). Items that are ``bytes``
    are hostile lines written as they are.
    """

    groups: tuple[tuple[Event | bytes, ...], ...]
    """The groups, in order, each written in one go. A failing example prints as
    ``ClientSession(groups=..., ...)`` in public names, and pastes back to be
    played again (:ref:`replaying a failing session <replaying-failing-sessions>`)."""
    extensions: frozenset[str] = EXTENSIONS
    """The extensions the session uses (what the server must offer)."""
    lmtp: bool = False
    """Whether it is an LMTP session (LHLO; a reply per accepted recipient at the end
    of content, RFC 2033 §4.2)."""

    @property
    def events(self) -> tuple[Event | bytes, ...]:
        """Every item of every group, in order."""
        return tuple(item for group in self.groups for item in group)

    @property
    def messages(self) -> tuple[bytes, ...]:
        """The content of each message, as the client means it (after DATA or BDAT)."""
        found: list[bytes] = []
        current: list[bytes] = []
        closing = False
        for item in (*self.events, None):
            if isinstance(item, MessageData):
                current.append(item.data)
                continue
            if closing:
                found.append(b"".join(current))
                current, closing = [], False
            if isinstance(item, EndOfMessage):
                found.append(b"".join(current))
                current = []
            elif isinstance(item, Bdat) and item.last:
                closing = True
        return tuple(found)

    def writes(self) -> list[bytes]:
        """The bytes of each group, as a client puts them on the wire.

        Commands in their wire form, DATA content dot-stuffed (its line
        endings left as they are, so smuggling sequences reach the server)
        and ended by ``CRLF.CRLF``, BDAT octets unchanged.
        """
        return [group_write(group) for group in self.groups]

    def answer_points(self) -> list[list[int]]:
        """For each group, the offsets in its write at which a reply falls due.

        A command is due once its line is in (only CRLF ends a line, RFC 5321
        §2.3.8: a hostile path holding one is two lines), a BDAT once its octets are in
        (RFC 3030 §2), the end of DATA content once the final dot line is in;
        a server that answers before has not read what it answers. (LMTP
        gives one reply per accepted recipient at the end of content.)
        """
        return [group_answer_points(group) for group in self.groups]

    def __iter__(self) -> Iterator[tuple[Event | bytes, ...]]:
        return iter(self.groups)


@functools.cache
def _envelope_strategies(
    offered: frozenset[str], *, utf8: bool
) -> tuple[
    st.SearchStrategy[Parameters], st.SearchStrategy[Mailbox], st.SearchStrategy[Parameters]
]:
    """MAIL parameters, mailboxes and RCPT parameters for a transaction, built once
    per offer: a strategy built inside a draw is validated again at every draw,
    which made a session slow enough to fail Hypothesis's too_slow health check."""
    return (
        mail_parameters(extensions=offered - {"SMTPUTF8", "AUTH"}),
        mailboxes(utf8=utf8),
        rcpt_parameters(extensions=offered),
    )


def _transaction(
    draw: st.DrawFn,
    offered: frozenset[str],
    content: st.SearchStrategy[bytes],
    binary_content: st.SearchStrategy[bytes] | None,
    *,
    pipelining: bool,
    hostile: bool,
    max_recipients: int,
) -> list[tuple[Event | bytes, ...]]:
    """One transaction; a ``BODY=BINARYMIME`` one, with ``binary_content``, when
    that is given (RFC 3030 §3: its content goes in BDAT chunks only)."""
    utf8 = "SMTPUTF8" in offered and draw(st.booleans())
    mail_params, senders, rcpt_params = _envelope_strategies(offered, utf8=utf8)
    params = dict(draw(mail_params))
    params.pop("BODY", None)  # set below, to what the content needs
    if utf8:
        params["SMTPUTF8"] = None
    binary = False
    if binary_content is not None and draw(st.booleans()):
        binary, content = True, binary_content
    body = draw(content)
    if binary:
        params["BODY"] = "BINARYMIME"
    elif any(octet > 127 for octet in body):
        params["BODY"] = "8BITMIME"
    if "SIZE" in params:
        params["SIZE"] = str(len(body))
    sender = draw(st.none() | senders)
    recipients = draw(st.lists(senders, min_size=1, max_size=max_recipients))
    mail = _fitting(Mail(sender, Parameters(params)), keep={"SMTPUTF8", "BODY"})
    envelope: list[Event | bytes] = [mail]
    envelope += [_fitting(Rcpt(rcpt, draw(rcpt_params)), keep=set()) for rcpt in recipients]
    if hostile:
        for line in draw(st.lists(_session_lines(offered), max_size=2)):
            envelope.insert(draw(st.integers(1, len(envelope))), line)
    groups: list[tuple[Event | bytes, ...]] = []
    use_bdat = binary or ("CHUNKING" in offered and draw(st.booleans()))
    if use_bdat:
        cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=3))))
        bounds = [0, *cuts, len(body)]
        chunks = [body[a:b] for a, b in itertools.pairwise(bounds)]
        chunk_events: list[Event | bytes] = []
        for index, chunk in enumerate(chunks):
            chunk_events.append(Bdat(len(chunk), last=index == len(chunks) - 1))
            if chunk:
                chunk_events.append(MessageData(chunk))
        commands_and_chunks = [*envelope, *chunk_events]
        if pipelining:
            # RFC 3030 §4.2: BDAT chunks may be pipelined; LAST ends the group.
            groups.append(tuple(commands_and_chunks))
        else:
            groups += [(event,) for event in envelope]
            pairs: list[tuple[Event | bytes, ...]] = []
            for event in chunk_events:
                if isinstance(event, Bdat):
                    pairs.append((event,))
                else:
                    pairs[-1] = (*pairs[-1], event)
            groups += pairs
        return groups
    if pipelining:
        groups.append((*envelope, Data()))
    else:
        groups += [(event,) for event in envelope] + [(Data(),)]
    content_group: tuple[Event | bytes, ...] = (EndOfMessage(),)
    if body:
        content_group = (MessageData(body), EndOfMessage())
    groups.append(content_group)
    return groups


_MAX_COMMAND_LINE: Final = 512  # RFC 5321 §4.5.3.1.4, CRLF included


def _fitting(command: Mail | Rcpt, *, keep: set[str]) -> Mail | Rcpt:
    """``command`` without the optional parameters that take it over 512 octets."""
    if len(format_command(command)) <= _MAX_COMMAND_LINE:
        return command
    params = Parameters({key: value for key, value in command.params.items() if key in keep})
    if isinstance(command, Mail):
        return Mail(command.sender, params)
    return Rcpt(command.recipient, params)


def sessions(
    *,
    extensions: Collection[str] = EXTENSIONS,
    lmtp: bool = False,
    max_transactions: int = 3,
    max_recipients: int = 4,
    content: st.SearchStrategy[bytes] | None = None,
    binary_content: st.SearchStrategy[bytes] | None = None,
    hostile: bool = False,
    auth_mechanisms: Collection[str] = AUTH_MECHANISMS,
) -> st.SearchStrategy[ClientSession]:
    """A whole client session that follows the state machine.

    Opens with EHLO (LHLO with ``lmtp``), then optionally STARTTLS and
    EHLO again, optionally AUTH (when AUTH is offered, over TLS if
    STARTTLS is), then up to ``max_transactions``
    mail transactions (DATA, or BDAT chunks when CHUNKING is offered, the
    recipients' content drawn from ``content``, by default
    :func:`message_contents` with 8-bit lines only under 8BITMIME),
    with RSET and NOOP between them, and QUIT. Under PIPELINING the group
    that ends a message (the end of DATA content, or ``BDAT ... LAST``) may
    also carry what follows it, as a pipelining client writes it (RFC 2920
    §3.1): an RSET, a NOOP, the next transaction's MAIL, RCPTs and DATA (or
    its chunks), or QUIT. Each transaction has one to
    ``max_recipients`` recipients. Where ``extensions`` names BINARYMIME and
    CHUNKING, a transaction may declare ``BODY=BINARYMIME`` and send content
    drawn from ``binary_content`` (by default :func:`message_contents` with
    ``binary=True``: any octets, bare CR and LF, NUL), in BDAT chunks only
    (RFC 3030 §3), never DATA. Narrow ``extensions`` to what
    your server offers: without PIPELINING every command is its own group.
    Narrow the limits to your server's too, so that no command goes past
    one: ``max_recipients`` to the recipients it takes a transaction (what
    it announces as ``LIMITS RCPTMAX``, RFC 9422 §4.2), ``max_transactions``
    to the MAIL commands it takes a session (``LIMITS MAILMAX``, §4.1).
    ``hostile=True`` slips broken command lines (bytes items) in between
    and into the envelope's pipelined group, where their refusals must
    come back in order; they are not counted against those limits.

    AUTH runs a whole exchange with one of ``auth_mechanisms`` (narrow it
    to the mechanisms your server lists; those of :data:`AUTH_MECHANISMS`
    are played, others left out): PLAIN with an initial response or after
    an empty 334 challenge, or LOGIN with the user name and the password
    each answering a challenge; an exchange may first be started and
    cancelled with ``*``, which the server answers with 501 (RFC 4954 §4).

    >>> from hypothesis import given
    >>> from smtpcore.smtp import ServerConnection
    >>> from smtpcore.testing import ConnectionPair
    >>> from smtpcore.testing import strategies as sst
    >>> @given(sst.sessions(extensions={"PIPELINING", "8BITMIME"}, max_recipients=2))
    ... def test_my_server(session):
    ...     pair = ConnectionPair(server=ServerConnection("mx.test", max_recipients=2))
    ...     pair.play(session)
    ...     assert all(answer.reply.code < 400 for answer in pair.answers)
    >>> test_my_server()
    """
    if max_transactions < 0:
        raise InvalidArgument(f"max_transactions={max_transactions!r} must be at least 0")
    if max_recipients < 1:
        raise InvalidArgument(
            f"max_recipients={max_recipients!r} must be at least 1: a transaction needs one"
        )
    offered = frozenset(name.upper() for name in extensions)
    # Built here, once per call: a strategy built inside a draw is validated at every draw.
    if content is None:
        content = message_contents(eight_bit="8BITMIME" in offered)
    if not {"BINARYMIME", "CHUNKING"} <= offered:
        binary_content = None  # RFC 3030 §3: BINARYMIME content goes with BDAT only
    elif binary_content is None:
        binary_content = message_contents(binary=True)
    _prepare(offered, content, binary_content, hostile=hostile)
    return _sessions(
        offered=offered,
        lmtp=lmtp,
        max_transactions=max_transactions,
        max_recipients=max_recipients,
        content=content,
        binary_content=binary_content,
        hostile=hostile,
        auth_mechanisms=auth_mechanisms,
    )


def _prepare(
    offered: frozenset[str],
    content: st.SearchStrategy[bytes],
    binary_content: st.SearchStrategy[bytes] | None,
    *,
    hostile: bool,
) -> None:
    """Build and validate now the strategies a session draws from inside its draws.

    Hypothesis does its one-time work on a strategy (checking the graph below it
    for emptiness, building lazy and regex strategies, reading the source of a
    filter's lambda) at the strategy's first draw, where it counted as the time
    of the first session's draw: a tenth of a second here, and seconds on a
    loaded machine, enough for the ``too_slow`` health check. Done here, it is
    paid once, when the test is defined."""
    offers = {offered, offered - {"REQUIRETLS"}}
    for utf8 in (False, True) if "SMTPUTF8" in offered else (False,):
        for offer in offers:
            for strategy in _envelope_strategies(offer, utf8=utf8):
                strategy.validate()
    content.validate()
    if binary_content is not None:
        binary_content.validate()
    if hostile:
        _session_lines(offered).validate()


@st.composite
def _sessions(
    draw: st.DrawFn,
    *,
    offered: frozenset[str],
    lmtp: bool,
    max_transactions: int,
    max_recipients: int,
    content: st.SearchStrategy[bytes],
    binary_content: st.SearchStrategy[bytes] | None,
    hostile: bool,
    auth_mechanisms: Collection[str],
) -> ClientSession:
    pipelining = "PIPELINING" in offered
    hello: Event = Lhlo("client.abc.example") if lmtp else Ehlo("client.abc.example")
    groups: list[tuple[Event | bytes, ...]] = [(hello,)]
    tls = "STARTTLS" in offered and draw(st.booleans())
    if tls:
        groups += [(StartTls(),), (hello,)]
    listed = {name.upper() for name in auth_mechanisms}
    mechanisms = [name for name in AUTH_MECHANISMS if name in listed]
    # A server that offers STARTTLS offers PLAIN and LOGIN only over TLS (RFC 4954 §4).
    usable = "AUTH" in offered and (tls or "STARTTLS" not in offered)
    if usable and mechanisms and draw(st.booleans()):
        groups += _authentication(draw, mechanisms)
    # REQUIRETLS is offered over TLS only (RFC 8689 §4.1).
    in_force = offered if tls or "STARTTLS" not in offered else offered - {"REQUIRETLS"}
    for _ in range(draw(st.integers(0, max_transactions))):
        # The group that ends a message may go on (RFC 2920 §3.1): RSET and MAIL
        # anywhere in a group, NOOP and DATA only last.
        open_end = pipelining and _ends_with_end(groups[-1])
        if draw(st.booleans()):
            command = draw(st.sampled_from([Rset(), Noop()]))
            if open_end and draw(st.booleans()):
                groups[-1] = (*groups[-1], command)
                open_end = isinstance(command, Rset)
            else:
                groups.append((command,))
                open_end = False
        if hostile and draw(st.booleans()):
            groups.append((draw(_session_lines(offered)),))
            open_end = False
        transaction = _transaction(
            draw,
            in_force,
            content,
            binary_content,
            pipelining=pipelining,
            hostile=hostile,
            max_recipients=max_recipients,
        )
        if open_end and draw(st.booleans()):
            groups[-1] = (*groups[-1], *transaction.pop(0))
        groups += transaction
    if pipelining and len(groups) > 1 and draw(st.booleans()) and _ends_with_end(groups[-1]):
        groups[-1] = (*groups[-1], Quit())  # QUIT may follow the end of content at once
    else:
        groups.append((Quit(),))
    return ClientSession(tuple(groups), offered, lmtp)


_USER: Final = "john"
_PASSWORD: Final = "secret"


def _authentication(draw: st.DrawFn, mechanisms: Sequence[str]) -> list[tuple[Event | bytes, ...]]:
    """An AUTH exchange that logs in, perhaps after one cancelled with ``*``."""
    groups: list[tuple[Event | bytes, ...]] = []
    if draw(st.booleans()):
        groups += [(Auth(draw(st.sampled_from(mechanisms))),), (AuthResponse(cancel=True),)]
    plain = PlainClient(_USER, _PASSWORD).initial_response()
    mechanism = draw(st.sampled_from(mechanisms))
    if mechanism == "LOGIN":
        groups += [
            (Auth("LOGIN"),),
            (AuthResponse(_USER.encode()),),
            (AuthResponse(_PASSWORD.encode()),),
        ]
    elif draw(st.booleans()):
        groups.append((Auth("PLAIN", plain),))
    else:
        groups += [(Auth("PLAIN"),), (AuthResponse(plain),)]
    return groups


def _ends_with_end(group: tuple[Event | bytes, ...]) -> bool:
    last = group[-1]
    return isinstance(last, EndOfMessage) or (isinstance(last, Bdat) and last.last)


# -- replies ------------------------------------------------------------------------


_REPLY_TEXT: Final = st.text(
    # RFC 5321 §4.2: textstring = 1*(%d09 / %d32-126), printable ASCII.
    st.characters(min_codepoint=32, max_codepoint=126),
    max_size=40,
).map(lambda text: text.lstrip("0123456789. "))
_CODES: Final = (
    211,
    214,
    220,
    221,
    235,
    250,
    251,
    252,
    334,
    354,
    421,
    432,
    450,
    451,
    452,
    454,
    455,
    500,
    501,
    502,
    503,
    504,
    521,
    530,
    534,
    535,
    550,
    551,
    552,
    553,
    554,
    555,
    556,
)


def replies(
    *,
    codes: Sequence[int] | None = None,
    enhanced: bool = True,
    multiline: bool = True,
) -> st.SearchStrategy[Reply]:
    """Server replies of every class (RFC 5321 §4.2), single and multi-line.

    ``codes`` narrows the codes (all of RFC 5321's and its extensions' by
    default); with ``enhanced``, 2xx, 4xx and 5xx replies may carry an
    enhanced status code (RFC 3463). A 334 is one line holding nothing but
    a base64 challenge, perhaps empty (RFC 4954 §4).

    >>> sst.replies(codes=[250, 550]).example()  # doctest: +SKIP
    Reply(code=550, text=('no such user',), status=EnhancedStatus(5, 1, 1))
    """
    code = st.sampled_from(tuple(codes) if codes is not None else _CODES)
    lines = st.lists(_REPLY_TEXT, min_size=1, max_size=4 if multiline else 1)

    @st.composite
    def build(draw: st.DrawFn) -> Reply:
        number = draw(code)
        if number == 334:
            return Reply(334, base64.b64encode(draw(st.binary(max_size=60))).decode("ascii"))
        status = None
        if enhanced and number // 100 != 3 and draw(st.booleans()):
            status = EnhancedStatus(
                number // 100, draw(st.integers(0, 7)), draw(st.integers(0, 9))
            )
        return Reply(number, tuple(draw(lines)), status)

    return build()


_HOSTILE_REPLIES: Final = (
    b"250\r\n",
    b"250-\r\n250 \r\n",
    b"250-first\r\n251 other code\r\n",
    b"250 ok\n",
    b"250 ok\r",
    b"25 ok\r\n",
    b"2500 ok\r\n",
    b"600 ok\r\n",
    b"199 ok\r\n",
    "\u0662\u0665\u0660 ok\r\n".encode(),
    b"250_ok\r\n",
    b"250 ok\x00\r\n",
    b"250 \xff\xfe\r\n",
    b"\r\n",
    b"250-" + b"x" * 5000 + b"\r\n250 end\r\n",
    b"".join(b"250-line\r\n" for _ in range(150)) + b"250 end\r\n",
    b"421 4.3.2 shutting down\r\n",
    b"334 not base64!\r\n",
    b"354 go\r\n250 unsolicited\r\n",
)


def reply_lines(*, hostile: bool = False) -> st.SearchStrategy[bytes]:
    """A reply's wire bytes, as a server writes them.

    Valid by default (:func:`replies` serialized); ``hostile=True`` adds
    what a client must refuse or survive: missing or extra digits, codes out
    of range, non-ASCII digits, a code that changes inside a multi-line
    reply, a line ended by a bare LF (which a client reads as a line end) or
    a bare CR, NUL and invalid UTF-8, over-long lines and too many lines, a
    421 where another reply was due, a 334 whose text is not base64, and a
    reply glued to an unsolicited one.

    >>> from hypothesis import given
    >>> from smtpcore import ProtocolError
    >>> from smtpcore.smtp import ClientConnection
    >>> from smtpcore.testing import strategies as sst
    >>> sst.reply_lines(hostile=True).example()  # doctest: +SKIP
    b'250-first\\r\\n251 other code\\r\\n'
    >>> @given(sst.reply_lines(hostile=True))
    ... def test_a_greeting_is_read_or_refused(line):
    ...     client = ClientConnection("client.test")
    ...     client.receive_data(line)
    ...     try:
    ...         client.next_event()
    ...     except ProtocolError:
    ...         pass  # refused: anything else escaping is a bug
    >>> test_a_greeting_is_read_or_refused()
    """
    valid = replies().map(lambda reply: reply.to_bytes(reply.status))
    if not hostile:
        return valid
    return st.one_of(valid, st.sampled_from(_HOSTILE_REPLIES))
