"""Strategies for single SMTP command events, Postfix's XCLIENT and XFORWARD among them.

:func:`commands` draws any one valid command, whatever the state it would be
legal in; :func:`xclients` and :func:`xforwards` the proxies' commands, with
the host names and addresses Postfix takes. Events only: a command line on the
wire, valid or broken, is ``_smtp_lines``'s; a whole session, ``_smtp_sessions``'.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Final

from hypothesis import reject
from hypothesis import strategies as st

from smtpcore._words import ascii_upper
from smtpcore.address import Mailbox
from smtpcore.smtp import (
    TEMPUNAVAIL,
    UNAVAILABLE,
    Auth,
    Bdat,
    Command,
    Data,
    Ehlo,
    Expn,
    Help,
    Lhlo,
    Mail,
    Noop,
    Parameters,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Unavailable,
    Vrfy,
    Xclient,
    Xforward,
    xtext,
)
from smtpcore.smtp._forwarding import MAX_VALUE as _MAX_XTEXT_VALUE
from smtpcore.testing._addresses import ATEXT, domains, mailboxes
from smtpcore.testing._regex import regex
from smtpcore.testing._smtp_parameters import EXTENSIONS, mail_parameters, rcpt_parameters

__all__ = [
    "commands",
    "xclients",
    "xforwards",
]


MAX_COMMAND_LINE: Final = 512  # RFC 5321 §4.5.3.1.4, CRLF included

_QTEXT: Final = "".join(chr(code) for code in range(32, 127) if chr(code) not in '"\\')
_STRINGS: Final = st.one_of(
    st.text(st.sampled_from(ATEXT), min_size=1, max_size=20),
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
    offered = {ascii_upper(name) for name in extensions}
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
).filter(lambda text: text.upper() != "[TEMPUNAVAIL]")
"""Printable US-ASCII without spaces, at most 40 characters (PROTO's limit is 64
octets): XFORWARD_README note 1 forbids controls, non-ASCII and white space. Not
``[TEMPUNAVAIL]`` in any case, which XFORWARD's attributes may not be (Hypothesis
draws the words the code spells out, and found it)."""


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
    if len(built.to_line()) > MAX_COMMAND_LINE - 2:
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
