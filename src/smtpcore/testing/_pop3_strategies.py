"""Strategies for POP3: RFC 1939, CAPA and RESP-CODES (RFC 2449), STLS (2595), AUTH (5034).

Client sessions ask for capabilities, may start TLS, log in with USER and
PASS or a SASL exchange (continuation lines, and ``*`` to cancel), then use
the TRANSACTION state's commands; server responses are what a server
answers to a given command: ``+OK`` with the text the command calls for,
``-ERR`` with a response code where one applies, ``+`` challenges during
AUTH, and multi-line content (capability lines, listings, messages that
stress dot-stuffing).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Final, TypeAlias

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from smtpcore import LocalProtocolError, pop3
from smtpcore.pop3._commands import format_command
from smtpcore.sasl import PlainClient
from smtpcore.testing._numbers import hostile_numbers
from smtpcore.testing._regex import regex

__all__ = [
    "POP3_CAPABILITIES",
    "POP3Session",
    "pop3_capabilities",
    "pop3_command_lines",
    "pop3_commands",
    "pop3_response_lines",
    "pop3_responses",
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
_SIZES: Final = st.integers(0, 10**9)
_TEXT: Final = st.text(
    # Text a client reads back as it was sent: no control, format or separator
    # character, which a status line's reader masks (RFC 5198 §2, smtpcore._textsafe).
    st.characters(exclude_categories=("Cs", "Cc", "Cf", "Zl", "Zp"), exclude_characters="[]"),
    max_size=30,
).map(str.strip)
_NAMES: Final = regex(r"[a-z][a-z0-9.]{0,15}")
_UNIQUE_IDS: Final = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=70
)
_CONTENT_PIECES: Final = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [b".", b"..", b"...", b"\r\n", b"\r", b"\n", b".\r\n", b"\r\n.\r\n", b"\r\n.", b"x"]
    ),
)

# Response codes (RFC 2449 §8, RFC 3206, RFC 6856 §3) and the commands they answer,
# as the IANA registry of POP3 response codes lists them.
_SYSTEM_CODES: Final = ("SYS/TEMP", "SYS/PERM")
_USER_CODES: Final = ("LOGIN-DELAY", "AUTH", *_SYSTEM_CODES)
_LOGIN_CODES: Final = ("IN-USE", "LOGIN-DELAY", "AUTH", *_SYSTEM_CODES)
_CONTENT_CODES: Final = ("UTF8", *_SYSTEM_CODES)


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


# -- server responses -----------------------------------------------------------------


def _err(codes: tuple[str, ...]) -> st.SearchStrategy[list[pop3.Event]]:
    return st.builds(
        lambda text, code: [pop3.Err(text, code=code)], _TEXT, st.none() | st.sampled_from(codes)
    )


@st.composite
def _content(draw: st.DrawFn, data: bytes) -> list[pop3.Event]:
    """``data`` as ResponseData pieces cut anywhere, then EndOfResponse."""
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=3))))
    bounds = [0, *cuts, len(data)]
    pieces: list[pop3.Event] = [
        pop3.ResponseData(data[a:b]) for a, b in itertools.pairwise(bounds) if b > a
    ]
    return [*pieces, pop3.EndOfResponse()]


def _listing(
    values: st.SearchStrategy[int] | st.SearchStrategy[str], *, unique: bool
) -> st.SearchStrategy[list[pop3.Event]]:
    """A scan or unique-id listing: message numbers and ``values`` (sizes, or unique-ids,
    ``unique`` too), a line for each message, none named twice (RFC 1939 §5, §7)."""
    pairs = st.lists(
        st.tuples(_NUMBERS, values),
        max_size=6,
        unique_by=(_first, _second) if unique else _first,
    )
    return pairs.flatmap(
        lambda pairs: _content(pop3.format_lines(f"{number} {value}" for number, value in pairs))
    )


def _first(pair: tuple[int, object]) -> object:
    return pair[0]


def _second(pair: tuple[int, object]) -> object:
    return pair[1]


@st.composite
def pop3_responses(draw: st.DrawFn, command: Sent) -> list[pop3.Event]:
    """A server's whole answer to ``command`` (or to a SASL response), as events to send.

    ``+OK`` with the text RFC 1939 gives it (the drop listing after STAT,
    a scan or unique-id listing after ``LIST n`` or ``UIDL n``), then, for
    a multi-line command, its content and ``EndOfResponse``: capability
    lines after CAPA (:func:`pop3_capabilities`), scan and unique-id
    listings, and for RETR and TOP pieces that put dots, CRs and LFs on
    both sides of every boundary. Or ``-ERR``, with or without the
    response codes that apply to the command (RFC 2449 §8: IN-USE and
    LOGIN-DELAY to a login; RFC 3206: AUTH, SYS/TEMP, SYS/PERM; RFC 6856:
    UTF8 to LIST, TOP, RETR). During AUTH, a ``+`` challenge may come
    instead; a cancelled exchange gets ``-ERR`` (RFC 5034 §4).

    >>> from smtpcore import pop3
    >>> from smtpcore.testing import strategies as sst
    >>> sst.pop3_responses(pop3.Capa()).example()  # doctest: +SKIP
    [Ok(text=''), ResponseData(data=b'TOP\\r\\nSASL PLAIN\\r\\n'), EndOfResponse()]
    """
    if isinstance(command, pop3.AuthResponse) and command.cancel:
        return draw(_err(("AUTH",)))
    if isinstance(command, pop3.Auth | pop3.AuthResponse):
        challenge = st.builds(lambda data: [pop3.Continue(data)], st.binary(max_size=40))
        return draw(st.one_of(challenge, _err(_LOGIN_CODES), _TEXT.map(lambda t: [pop3.Ok(t)])))
    codes: tuple[str, ...] = _SYSTEM_CODES
    if isinstance(command, pop3.User):
        codes = _USER_CODES
    elif isinstance(command, pop3.Pass | pop3.Apop):
        codes = _LOGIN_CODES
    elif isinstance(command, pop3.List | pop3.Top | pop3.Retr):
        codes = _CONTENT_CODES
    if draw(st.booleans()):
        return draw(_err(codes))
    if isinstance(command, pop3.Stat):
        return [pop3.Ok(draw(st.builds(lambda count, size: f"{count} {size}", _SIZES, _SIZES)))]
    if isinstance(command, pop3.List) and command.message is not None:
        return [pop3.Ok(f"{command.message} {draw(_SIZES)}")]
    if isinstance(command, pop3.Uidl) and command.message is not None:
        return [pop3.Ok(f"{command.message} {draw(_UNIQUE_IDS)}")]
    answer: list[pop3.Event] = [pop3.Ok(draw(_TEXT))]
    if isinstance(command, pop3.Capa):
        lines = draw(pop3_capabilities(transaction=draw(st.booleans())))
        return answer + draw(_content(pop3.format_lines(lines)))
    if isinstance(command, pop3.AuthMechanisms):
        names = draw(st.lists(st.sampled_from(_MECHANISMS), min_size=1, unique=True))
        return answer + draw(_content(pop3.format_lines(names)))
    if isinstance(command, pop3.List):
        return answer + draw(_listing(_SIZES, unique=False))
    if isinstance(command, pop3.Uidl):
        return answer + draw(_listing(_UNIQUE_IDS, unique=True))
    if isinstance(command, pop3.Command) and command.multiline:
        pieces = draw(st.lists(_CONTENT_PIECES, max_size=12))
        answer += [pop3.ResponseData(piece) for piece in pieces]
        answer.append(pop3.EndOfResponse())
    return answer


# -- wire lines -----------------------------------------------------------------------

_VALID_LINES: Final = (
    b"USER mrose\r\n",
    b"PASS secret\r\n",
    b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n",
    b"AUTH\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH PLAIN AHUAcA==\r\n",
    b"AHUAcA==\r\n",
    b"*\r\n",
    b"CAPA\r\n",
    b"STLS\r\n",
    b"UTF8\r\n",
    b"STAT\r\n",
    b"LIST\r\n",
    b"LIST 1\r\n",
    b"RETR 1\r\n",
    b"DELE 1\r\n",
    b"TOP 1 0\r\n",
    b"UIDL\r\n",
    b"UIDL 1\r\n",
    b"NOOP\r\n",
    b"RSET\r\n",
    b"QUIT\r\n",
)
_HOSTILE_LINES: Final = (
    b"DELE 0\r\n",
    b"RETR -1\r\n",
    b"RETR \xd9\xa3\r\n",
    b"TOP 1\r\n",
    b"LIST 1 2\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"RETR " + b"9" * 300 + b"\r\n",
    b"USER " + b"x" * 300 + b"\r\n",
    b"STAT\x00\r\n",
    b"\xff\xfe\r\n",
)


_ARGUMENT_SLOTS: Final[dict[str, tuple[str, ...]]] = {
    "USER": ("name",),
    "PASS": ("name",),
    "APOP": ("name", "digest"),
    "AUTH": ("mechanism", "base64"),
    "CAPA": (),
    "STLS": (),
    "UTF8": (),
    "STAT": (),
    "LIST": ("number",),
    "RETR": ("number",),
    "DELE": ("number",),
    "NOOP": (),
    "RSET": (),
    "TOP": ("number", "number"),
    "UIDL": ("number",),
    "QUIT": (),
}
"""Each command's arguments, by kind: RFC 1939 §4-7, CAPA (RFC 2449 §5), STLS
(RFC 2595 §4), AUTH (RFC 5034 §4), UTF8 (RFC 6856 §3). LIST's and UIDL's
number is optional; ``number`` is the kind the hostile lines attack."""

_COMMAND_LINE_OCTETS: Final = 255
"""The longest command line a POP3 server must take, CRLF included (RFC 2449 §4):
the room every number slot's digits share with the rest of the line."""


_SLOT_VALUES: Final[dict[str, st.SearchStrategy[str]]] = {
    "number": st.just("1"),
    "name": st.sampled_from(["mrose", "1", "-1"]),
    "digest": st.just("c4c9334bac560ecc979e58001b3e22fb"),
    "mechanism": st.sampled_from(["PLAIN", "LOGIN", "X"]),
    "base64": st.sampled_from(["AHUAcA==", "=", "*"]),
}
"""What goes in each kind of argument slot when it is not the one attacked: a valid
message number in a number's, plain tokens in the others (their own attacks are in
:data:`_HOSTILE_LINES`)."""


def _command_line(verb: str, words: list[str]) -> bytes:
    return (" ".join([verb, *words]) + "\r\n").encode("utf-8")


@functools.cache
def _hostile_numbers_in(room: int) -> st.SearchStrategy[str]:
    """Hostile numbers for a slot with ``room`` octets left on the line: its digit
    runs reach the line's end and just past it, so numbers too long for a parser
    yet inside the line limit are drawn, not only lines the limit refuses first.
    Cached: ``room`` is at most :data:`_COMMAND_LINE_OCTETS`."""
    return hostile_numbers(max_digits=max(room, 1))


@st.composite
def _grammar_lines(draw: st.DrawFn, verbs: tuple[str, ...]) -> bytes:
    """One of ``verbs`` with its argument slots filled; sometimes one argument short
    or one too many (the extra one a number), so every argument count is tried.

    One number slot a line gets a hostile number and the others a valid one
    (``TOP 1 -1``): with every slot hostile, a parser that refused the first
    never read the next, so TOP's count went unread behind a bad message number."""
    verb = draw(st.sampled_from(verbs))
    slots = _ARGUMENT_SLOTS[verb]
    count = draw(st.one_of(st.just(len(slots)), st.integers(0, len(slots) + 1)))
    kinds = [*slots, "number"][:count]
    words = [draw(_SLOT_VALUES[kind]) for kind in kinds]
    numbers = [index for index, kind in enumerate(kinds) if kind == "number"]
    if numbers:
        attacked = draw(st.sampled_from(numbers))
        room = _COMMAND_LINE_OCTETS - len(_command_line(verb, words)) + len(words[attacked])
        words[attacked] = draw(_hostile_numbers_in(room))
    return _command_line(verb, words)


_NUMBERED_VERBS: Final = tuple(
    verb for verb, slots in _ARGUMENT_SLOTS.items() if "number" in slots
)


def pop3_command_lines(*, hostile: bool = False) -> st.SearchStrategy[bytes]:
    """One client line, CRLF included: every command of RFC 1939 and its
    extensions (RFC 2449, 2595, 5034, 6856), the wire form of
    :func:`pop3_commands` with every capability listed, QUIT, and SASL
    responses; ``hostile=True`` adds lines built from the grammar: every
    command with each number slot (LIST, RETR, DELE, UIDL, both of TOP's)
    holding a hostile number in turn, the others a valid one (signed, zero,
    huge, over-long, digits that are not ASCII, empty, spaced, with trailing
    garbage: ``TOP 1 -1``), its digit runs as long as the room left on the
    255-octet line (RFC 2449 §4) and just longer, and every
    command with one argument too few or too many; and missing arguments,
    bare CR or LF, NUL, over-long lines and arbitrary bytes.

    >>> from hypothesis import given
    >>> from smtpcore import pop3
    >>> from smtpcore.testing import run_pop3_server
    >>> from smtpcore.testing import strategies as sst
    >>> sst.pop3_command_lines(hostile=True).example()  # doctest: +SKIP
    b'RETR \\xd9\\xa3\\r\\n'
    >>> @given(sst.pop3_command_lines(hostile=True))
    ... def test_memory_stays_bounded(line):
    ...     server = pop3.ServerConnection("pop.test")
    ...     server.send(pop3.Ok("ready"))
    ...     run_pop3_server(server, line)
    ...     assert server.buffered <= server.max_buffered + len(line)
    >>> test_memory_stays_bounded()
    """
    events = st.one_of(
        pop3_commands(login=True, capabilities=POP3_CAPABILITIES | {"UTF8"}),
        st.just(pop3.Quit()),
        st.builds(pop3.AuthResponse, st.binary(max_size=30)),
        st.just(pop3.AuthResponse(cancel=True)),
    )
    valid = st.one_of(st.sampled_from(_VALID_LINES), events.map(format_command))
    if not hostile:
        return valid
    return st.one_of(
        valid,
        st.sampled_from(_HOSTILE_LINES),
        _grammar_lines(_NUMBERED_VERBS),
        _grammar_lines(tuple(_ARGUMENT_SLOTS)),
        st.binary(max_size=30),
    )


_VALID_RESPONSES: Final = (
    b"+OK\r\n",
    b"+OK 2 320\r\n",
    b"-ERR [IN-USE] locked\r\n",
    b"-ERR\r\n",
    b"+ \r\n",
    b"+ AAAA\r\n",
    b".\r\n",
    b"..x\r\n",
    b"line\r\n",
    b"PIPELINING\r\n",
)
_HOSTILE_RESPONSES: Final = (
    b"\r\n",
    b"\r",
    b"\n",
    b"+OK " + b"x" * 3000 + b"\r\n",
    b"+ok\r\n",
    b"OK\r\n",
    b"-ERR [UNTERMINATED\r\n",
    b"+OK\n",
    b"+ not base64!\r\n",
    b".\n",
)


def pop3_response_lines(*, hostile: bool = False) -> st.SearchStrategy[bytes]:
    """Pieces of what a POP3 server writes: status lines, SASL challenges,
    content lines and the terminator; ``hostile=True`` adds lowercase or
    missing status indicators, bare CR or LF, over-long lines, unterminated
    response codes and arbitrary bytes.

    >>> from hypothesis import given
    >>> from smtpcore import ProtocolError, pop3
    >>> from smtpcore.testing import strategies as sst
    >>> sst.pop3_response_lines(hostile=True).example()  # doctest: +SKIP
    b'-ERR [UNTERMINATED\\r\\n'
    >>> @given(sst.pop3_response_lines(hostile=True))
    ... def test_a_greeting_is_read_or_refused(line):
    ...     client = pop3.ClientConnection("client.test")
    ...     client.receive_data(line)
    ...     try:
    ...         client.next_event()
    ...     except ProtocolError:
    ...         pass  # refused: anything else escaping is a bug
    >>> test_a_greeting_is_read_or_refused()
    """
    valid = st.sampled_from(_VALID_RESPONSES)
    if not hostile:
        return valid
    return st.one_of(valid, st.sampled_from(_HOSTILE_RESPONSES), st.binary(max_size=30))
