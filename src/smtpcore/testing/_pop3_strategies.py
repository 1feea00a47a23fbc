"""Strategies for POP3 (RFC 1939, CAPA and RESP-CODES of RFC 2449, AUTH of RFC 5034).

Client sessions log in and then use the TRANSACTION state's commands;
server responses are single-line (``+OK``, ``-ERR`` with or without a
response code) or multi-line with content that stresses dot-stuffing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from hypothesis import strategies as st

from smtpcore import pop3
from smtpcore.pop3._commands import format_command

__all__ = [
    "POP3Session",
    "pop3_command_lines",
    "pop3_commands",
    "pop3_response_lines",
    "pop3_responses",
    "pop3_sessions",
]

_NUMBERS: Final = st.integers(1, 2**31 - 1)
_TEXT: Final = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="[]"), max_size=30
).map(str.strip)
_RESP_CODES: Final = ("IN-USE", "LOGIN-DELAY", "SYS/TEMP", "SYS/PERM", "AUTH", "UTF8")
_CONTENT_PIECES: Final = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [b".", b"..", b"...", b"\r\n", b"\r", b"\n", b".\r\n", b"\r\n.\r\n", b"\r\n.", b"x"]
    ),
)


def pop3_commands(*, login: bool = False) -> st.SearchStrategy[pop3.Command]:
    """One valid TRANSACTION-state command (STAT, LIST, UIDL, RETR, TOP, DELE,
    NOOP, RSET, CAPA); with ``login``, the AUTHORIZATION commands too."""
    options: list[st.SearchStrategy[pop3.Command]] = [
        st.just(pop3.Stat()),
        st.builds(pop3.List, st.none() | _NUMBERS),
        st.builds(pop3.Uidl, st.none() | _NUMBERS),
        st.builds(pop3.Retr, _NUMBERS),
        st.builds(pop3.Top, _NUMBERS, st.integers(0, 2**31 - 1)),
        st.builds(pop3.Dele, _NUMBERS),
        st.just(pop3.Noop()),
        st.just(pop3.Rset()),
        st.just(pop3.Capa()),
    ]
    if login:
        options += [
            st.builds(pop3.User, st.from_regex(r"[a-z][a-z0-9.]{0,15}", fullmatch=True)),
            st.builds(pop3.Pass, st.from_regex(r"[!-~][ -~]{0,15}", fullmatch=True)),
            st.builds(pop3.Auth, st.just("PLAIN"), st.none() | st.binary(max_size=30)),
        ]
    return st.one_of(options)


@dataclass(frozen=True, slots=True)
class POP3Session:
    """A POP3 client's session as the groups it writes (RFC 2449 §6.6 pipelining)."""

    groups: tuple[tuple[pop3.Command, ...], ...]

    @property
    def commands(self) -> tuple[pop3.Command, ...]:
        return tuple(command for group in self.groups for command in group)

    def writes(self) -> list[bytes]:
        """The bytes of each group, as a client puts them on the wire."""
        return [b"".join(_wire(command) for command in group) for group in self.groups]

    def __iter__(self) -> Iterator[tuple[pop3.Command, ...]]:
        return iter(self.groups)


def _wire(command: pop3.Command) -> bytes:
    return format_command(command)


@st.composite
def pop3_sessions(
    draw: st.DrawFn, *, pipelining: bool = True, max_commands: int = 8
) -> POP3Session:
    """A whole session: USER and PASS, up to ``max_commands`` TRANSACTION
    commands, QUIT. With ``pipelining`` the commands after login go out in
    groups (RFC 2449 §6.6); without, one command a group.

    >>> from smtpcore.testing import strategies as sst
    >>> sst.pop3_sessions().example().commands  # doctest: +SKIP
    (User(name='mrose'), Pass(password='tanstaaf'), Retr(message=1), Quit())
    """
    login = (pop3.User("mrose"), pop3.Pass("tan staaf"))
    commands = [*draw(st.lists(pop3_commands(), max_size=max_commands)), pop3.Quit()]
    groups: list[tuple[pop3.Command, ...]] = [(login[0],), (login[1],)]
    if pipelining:
        while commands:
            size = draw(st.integers(1, len(commands)))
            groups.append(tuple(commands[:size]))
            del commands[:size]
    else:
        groups += [(command,) for command in commands]
    return POP3Session(tuple(groups))


@st.composite
def pop3_responses(draw: st.DrawFn, command: pop3.Command) -> list[pop3.Event]:
    """A server's whole response to ``command``, as events to send.

    ``-ERR`` with or without an RFC 2449 response code, or ``+OK`` followed,
    for a multi-line command, by content pieces that put dots, CRs and LFs
    on both sides of every boundary and the ``EndOfResponse``.

    >>> sst.pop3_responses(pop3.Retr(1)).example()  # doctest: +SKIP
    [Ok(text=''), ResponseData(data=b'..\\r\\n'), EndOfResponse()]
    """
    if draw(st.booleans()):
        code = draw(st.none() | st.sampled_from(_RESP_CODES))
        return [pop3.Err(draw(_TEXT), code=code)]
    answer: list[pop3.Event] = [pop3.Ok(draw(_TEXT))]
    if command.multiline:
        pieces = draw(st.lists(_CONTENT_PIECES, max_size=12))
        answer += [pop3.ResponseData(piece) for piece in pieces]
        answer.append(pop3.EndOfResponse())
    return answer


_VALID_LINES: Final = (
    b"USER mrose\r\n",
    b"PASS secret\r\n",
    b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n",
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
    b"TOP 1 0\r\n",
    b"UIDL\r\n",
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


def pop3_command_lines(*, hostile: bool = False) -> st.SearchStrategy[bytes]:
    """One client line, CRLF included: every command of RFC 1939 and its
    extensions, SASL responses among them; ``hostile=True`` adds bad
    message numbers (zero, negative, non-ASCII digits, 300 digits), missing
    arguments, bare CR or LF, NUL, over-long lines and arbitrary bytes."""
    valid = st.sampled_from(_VALID_LINES)
    if not hostile:
        return valid
    return st.one_of(valid, st.sampled_from(_HOSTILE_LINES), st.binary(max_size=30))


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
    response codes and arbitrary bytes."""
    valid = st.sampled_from(_VALID_RESPONSES)
    if not hostile:
        return valid
    return st.one_of(valid, st.sampled_from(_HOSTILE_RESPONSES), st.binary(max_size=30))
