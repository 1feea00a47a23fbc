"""Strategies for POP3 clients: RFC 1939, CAPA (RFC 2449), STLS (2595), AUTH (5034).

Client sessions ask for capabilities, may start TLS, log in with USER and
PASS or a SASL exchange (continuation lines, and ``*`` to cancel), then use
the TRANSACTION state's commands. The capability lines they are drawn from
are here too, and the values the server's side (``_pop3_answers``) and the
wire lines (``_pop3_lines``) draw from the same pool.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Final, TypeAlias

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from smtpcore import LocalProtocolError, pop3
from smtpcore.pop3._commands import format_command
from smtpcore.sasl import PlainClient
from smtpcore.testing._regex import regex

__all__ = [
    "POP3_CAPABILITIES",
    "POP3Session",
    "pop3_capabilities",
    "pop3_commands",
    "pop3_sessions",
    "pop3_unique_ids",
]

POP3_CAPABILITIES: Final = frozenset(
    {"USER", "SASL PLAIN LOGIN", "STLS", "PIPELINING", "TOP", "UIDL"}
)
"""The CAPA lines (RFC 2449 §6) the POP3 session strategies know how to use.

Pass a server's own lines instead (``conn.capabilities()`` of a
:class:`smtpcore.pop3.ServerConnection`, or what your server lists) to draw
only what it offers."""

_SESSION_MECHANISMS: Final = ("PLAIN", "LOGIN")
"""The SASL mechanisms whose exchange :func:`pop3_sessions` plays."""

Sent: TypeAlias = pop3.Command | pop3.AuthResponse
"""What a POP3 client writes: a command, or a line answering a ``+`` challenge."""

_NUMBERS: Final = st.integers(1, 2**31 - 1)
_NAMES: Final = regex(r"[a-z][a-z0-9.]{0,15}")
_UNIQUE_IDS: Final = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=70
)


def _capability_tags(capabilities: Collection[str]) -> dict[str, tuple[str, ...]]:
    return pop3.parse_capabilities("\n".join(capabilities))


# -- capabilities ---------------------------------------------------------------------

_MECHANISMS: Final = (
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "SCRAM-SHA-256",
    "SCRAM-SHA-256-PLUS",
    "XOAUTH2",
    "OAUTHBEARER",
    "GSSAPI",
)
_PARAMS: Final = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12
)
"""An RFC 2449 §9 ``param``: one or more printable ASCII characters."""


def _per_user(base: st.SearchStrategy[str], transaction: bool) -> st.SearchStrategy[str]:
    if not transaction:
        return base
    return st.one_of(base, base.map(lambda line: line + " USER"))


def pop3_unique_ids() -> st.SearchStrategy[str]:
    """Unique-ids as a UIDL listing gives them: 1 to 70 characters from 0x21 to 0x7E
    (RFC 1939 §7), for a client that keeps the ids of what it fetched.

    >>> from smtpcore.testing import strategies as sst
    >>> sst.pop3_unique_ids().example()  # doctest: +SKIP
    'QhrcOQAAf0dy0'
    """
    return _UNIQUE_IDS


def pop3_capabilities(*, transaction: bool = False) -> st.SearchStrategy[list[str]]:
    """The lines of a server's answer to CAPA (RFC 2449 §6), in any order.

    Drawn from TOP, USER, ``SASL`` with one to four mechanisms, RESP-CODES,
    AUTH-RESP-CODE (RFC 3206), PIPELINING, UIDL, ``EXPIRE`` with days or
    ``NEVER``, ``LOGIN-DELAY`` with seconds, ``IMPLEMENTATION`` with a
    free text, STLS (RFC 2595), UTF8 and LANG (RFC 6856), and ``X-``
    capabilities a client must skip. With ``transaction``, as listed after
    login: EXPIRE and LOGIN-DELAY may carry the ``USER`` argument (the
    value for this user, RFC 2449 §6.5, §6.7).

    >>> from smtpcore.testing import strategies as sst
    >>> sst.pop3_capabilities().example()  # doctest: +SKIP
    ['UIDL', 'SASL PLAIN SCRAM-SHA-256', 'EXPIRE NEVER', 'RESP-CODES']
    """
    mechanisms = st.lists(st.sampled_from(_MECHANISMS), min_size=1, max_size=4, unique=True)
    lines = st.one_of(
        st.sampled_from(
            ["TOP", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "UIDL", "STLS", "LANG"]
        ),
        st.sampled_from(["UTF8", "UTF8 USER"]),
        mechanisms.map(lambda names: "SASL " + " ".join(names)),
        _per_user(
            st.one_of(st.just("NEVER"), st.integers(0, 3650).map(str)).map("EXPIRE ".__add__),
            transaction,
        ),
        _per_user(st.integers(0, 86400).map(lambda secs: f"LOGIN-DELAY {secs}"), transaction),
        st.lists(_PARAMS, min_size=1, max_size=3).map(
            lambda words: "IMPLEMENTATION " + " ".join(words)
        ),
        st.builds(
            lambda tag, params: " ".join(["X-" + tag, *params]),
            regex(r"[A-Z0-9-]{1,12}"),
            st.lists(_PARAMS, max_size=2),
        ),
    )
    return st.lists(lines, max_size=12, unique_by=lambda line: line.split(" ", 1)[0])


# -- commands -------------------------------------------------------------------------


def pop3_commands(
    *, login: bool = False, capabilities: Collection[str] = POP3_CAPABILITIES
) -> st.SearchStrategy[pop3.Command]:
    """One valid TRANSACTION-state command (STAT, LIST, RETR, DELE, NOOP,
    RSET, CAPA, and TOP and UIDL when listed in ``capabilities``); with
    ``login``, the AUTHORIZATION commands too: USER and PASS when USER is
    listed, APOP, AUTH with the listed SASL mechanisms (and bare AUTH, which
    lists them), STLS and UTF8 when listed.

    >>> from hypothesis import given
    >>> from smtpcore import pop3
    >>> from smtpcore.testing import strategies as sst
    >>> sst.pop3_commands(login=True).example()  # doctest: +SKIP
    Auth(mechanism='LOGIN', initial_response=b'\\x00j')
    >>> @given(sst.pop3_commands(capabilities=["USER"]))
    ... def test_no_top_or_uidl_unless_listed(command):
    ...     assert not isinstance(command, pop3.Top | pop3.Uidl)
    >>> test_no_top_or_uidl_unless_listed()
    """
    tags = _capability_tags(capabilities)
    options: list[st.SearchStrategy[pop3.Command]] = [
        st.just(pop3.Stat()),
        st.builds(pop3.List, st.none() | _NUMBERS),
        st.builds(pop3.Retr, _NUMBERS),
        st.builds(pop3.Dele, _NUMBERS),
        st.just(pop3.Noop()),
        st.just(pop3.Rset()),
        st.just(pop3.Capa()),
    ]
    if "UIDL" in tags:
        options.append(st.builds(pop3.Uidl, st.none() | _NUMBERS))
    if "TOP" in tags:
        options.append(st.builds(pop3.Top, _NUMBERS, st.integers(0, 2**31 - 1)))
    if login:
        options.append(st.builds(pop3.Apop, _NAMES, regex(r"[0-9a-f]{32}")))
        if "USER" in tags:
            options += [
                st.builds(pop3.User, _NAMES),
                st.builds(pop3.Pass, regex(r"[!-~][ -~]{0,15}")),
            ]
        if tags.get("SASL"):
            options += [
                st.builds(
                    pop3.Auth, st.sampled_from(tags["SASL"]), st.none() | st.binary(max_size=30)
                ),
                st.just(pop3.AuthMechanisms()),
            ]
        if "STLS" in tags:
            options.append(st.just(pop3.Stls()))
        if "UTF8" in tags:
            options.append(st.just(pop3.Utf8()))
    return st.one_of(options)


# -- whole client sessions ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class POP3Session:
    """A POP3 client's session as the groups it writes (RFC 2449 §6.6 pipelining).

    Each group goes out in one write and is answered before the next one is
    sent. A group after ``AUTH`` holds the line answering the server's
    ``+`` challenge (:class:`~smtpcore.pop3.AuthResponse`, ``*`` when
    cancelled); after ``STLS`` both sides do the TLS handshake.
    """

    groups: tuple[tuple[Sent, ...], ...]

    @property
    def commands(self) -> tuple[Sent, ...]:
        """Every command and SASL response, in order."""
        return tuple(command for group in self.groups for command in group)

    def writes(self) -> list[bytes]:
        """The bytes of each group, as a client puts them on the wire."""
        return [b"".join(format_command(command) for command in group) for group in self.groups]

    def __iter__(self) -> Iterator[tuple[Sent, ...]]:
        return iter(self.groups)


def pop3_sessions(
    *,
    capabilities: Collection[str] = POP3_CAPABILITIES,
    pipelining: bool = True,
    tls: bool | None = None,
    user: str = "mrose",
    password: str = "tan staaf",
    max_commands: int = 8,
) -> st.SearchStrategy[POP3Session]:
    """A whole client session that follows the state machine.

    May open with CAPA (it does when it will pipeline: the client learns
    PIPELINING from it, RFC 2449 §6.6); with STLS listed, may start TLS
    (``tls=True``: always; ``tls=False``: never) and then asks CAPA again
    when it needs the capabilities, as RFC 2595 §4 says to discard them.
    It may start an AUTH exchange and cancel it with ``*`` (RFC 5034 §4),
    then logs in as ``user`` with ``password``: USER and PASS when USER is
    listed, or ``SASL`` PLAIN (with an initial response or after an empty
    challenge) or LOGIN (user name and password, one per challenge) when
    listed. Up to ``max_commands`` TRANSACTION commands follow
    (:func:`pop3_commands`), then QUIT; with ``pipelining`` and PIPELINING
    listed, they go out in groups, otherwise one command a group.

    Narrow ``capabilities`` to your server's CAPA lines; it must list USER,
    or SASL with PLAIN or LOGIN.

    >>> from hypothesis import given
    >>> from smtpcore import pop3
    >>> from smtpcore.testing import POP3ConnectionPair
    >>> from smtpcore.testing import strategies as sst
    >>> def my_server():
    ...     return pop3.ServerConnection("pop.test", stls=True, sasl_mechanisms=["PLAIN", "LOGIN"])
    >>> @given(sst.pop3_sessions(capabilities=my_server().capabilities()))
    ... def test_every_session_logs_in_and_quits(session):
    ...     pair = POP3ConnectionPair(server=my_server())
    ...     pair.play(session)
    ...     assert pair.server.state is pop3.State.CLOSED
    >>> test_every_session_logs_in_and_quits()
    """
    tags = _capability_tags(capabilities)
    mechanisms: list[str] = [name for name in _SESSION_MECHANISMS if name in tags.get("SASL", ())]
    logins = (["USER"] if "USER" in tags else []) + mechanisms
    if not logins:
        raise InvalidArgument(
            f"capabilities={sorted(capabilities)!r} list no login this strategy can play: "
            "it needs USER, or SASL with PLAIN or LOGIN"
        )
    if tls and "STLS" not in tags:
        raise InvalidArgument("tls=True needs STLS among the capabilities")
    if max_commands < 0:
        raise InvalidArgument(f"max_commands={max_commands!r} must be at least 0")
    try:
        login_events = (pop3.User(user), pop3.Pass(password), PlainClient(user, password))
    except LocalProtocolError as exc:
        raise InvalidArgument(f"user and password cannot be sent: {exc}") from None
    return _sessions(
        tags,
        logins,
        mechanisms,
        pipelining=pipelining and "PIPELINING" in tags,
        tls=tls if "STLS" in tags else False,
        login_events=login_events,
        max_commands=max_commands,
        capabilities=tuple(capabilities),
    )


@st.composite
def _sessions(
    draw: st.DrawFn,
    tags: dict[str, tuple[str, ...]],
    logins: list[str],
    mechanisms: list[str],
    *,
    pipelining: bool,
    tls: bool | None,
    login_events: tuple[pop3.User, pop3.Pass, PlainClient],
    max_commands: int,
    capabilities: tuple[str, ...],
) -> POP3Session:
    user, password, plain = login_events
    groups: list[tuple[Sent, ...]] = []
    if pipelining or draw(st.booleans()):
        groups.append((pop3.Capa(),))
    if tls or (tls is None and draw(st.booleans())):
        groups.append((pop3.Stls(),))
        if pipelining or draw(st.booleans()):
            groups.append((pop3.Capa(),))  # RFC 2595 §4: capabilities are asked again
    if len(mechanisms) > 0 and draw(st.booleans()):
        groups += [
            (pop3.Auth(draw(st.sampled_from(mechanisms))),),
            (pop3.AuthResponse(cancel=True),),
        ]
    method = draw(st.sampled_from(logins))
    if method == "USER":
        groups += [(user,), (password,)]
    elif method == "PLAIN" and draw(st.booleans()):
        groups.append((pop3.Auth("PLAIN", plain.initial_response()),))
    elif method == "PLAIN":
        groups += [(pop3.Auth("PLAIN"),), (pop3.AuthResponse(plain.initial_response()),)]
    else:
        groups += [
            (pop3.Auth("LOGIN"),),
            (pop3.AuthResponse(user.name.encode()),),
            (pop3.AuthResponse(password.password.encode()),),
        ]
    transaction = pop3_commands(capabilities=capabilities)
    commands = [*draw(st.lists(transaction, max_size=max_commands)), pop3.Quit()]
    if pipelining:
        while commands:
            size = draw(st.integers(1, len(commands)))
            groups.append(tuple(commands[:size]))
            del commands[:size]
    else:
        groups += [(command,) for command in commands]
    return POP3Session(tuple(groups))
