"""Strategies for ESMTP parameters: xtext, MAIL and RCPT parameters, and their text.

What the extensions add to MAIL FROM and RCPT TO (RFC 5321 §4.1.2, esmtp-param):
SIZE, BODY, SMTPUTF8, DSN's RET, ENVID, NOTIFY and ORCPT, AUTH=, and with
``hostile=True`` the values and keywords a server must refuse. The commands,
command lines and sessions draw their parameters from here, so
:data:`EXTENSIONS`, the extensions every SMTP strategy uses unless narrowed,
is defined here too.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from hypothesis import strategies as st

from smtpcore._words import ascii_upper
from smtpcore.smtp import OriginalRecipient, Parameters, xtext
from smtpcore.smtp._dsn import DSNError, read_any_case_xtext
from smtpcore.testing._addresses import mailboxes
from smtpcore.testing._numbers import malformed_numbers
from smtpcore.testing._regex import regex

__all__ = [
    "EXTENSIONS",
    "mail_parameters",
    "parameter_texts",
    "rcpt_parameters",
    "xtexts",
]


EXTENSIONS: Final = frozenset(
    {"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "CHUNKING", "DSN", "STARTTLS", "AUTH"}
)
"""The ESMTP extensions the session strategies use unless narrowed; :func:`sessions`
uses BINARYMIME and REQUIRETLS too where ``extensions`` names them."""


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


def hostile_numbers() -> st.SearchStrategy[str]:
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
    offered = {ascii_upper(name) for name in extensions}
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
        choices += HOSTILE_MAIL_PARAMETERS
    return parameters_from(choices)


HOSTILE_MAIL_PARAMETERS: Final[list[st.SearchStrategy[tuple[str, str | None]]]] = [
    st.tuples(st.sampled_from(["SIZE", "size"]), hostile_numbers()),
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
    offered = {ascii_upper(name) for name in extensions}
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
        choices += HOSTILE_RCPT_PARAMETERS
    return parameters_from(choices)


HOSTILE_RCPT_PARAMETERS: Final[list[st.SearchStrategy[tuple[str, str | None]]]] = [
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
    offered = frozenset(ascii_upper(name) for name in extensions)
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


def parameters_from(
    choices: list[st.SearchStrategy[tuple[str, str | None]]], *, min_size: int = 0
) -> st.SearchStrategy[Parameters]:
    if not choices:
        return st.just(Parameters())
    return st.lists(
        st.one_of(choices), min_size=min_size, max_size=4, unique_by=lambda item: item[0].upper()
    ).map(Parameters)
