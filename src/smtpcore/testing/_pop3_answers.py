"""Strategies for a POP3 server's answers, as the events it sends: ``+OK`` with
the text a command calls for, ``-ERR`` with a response code where one applies
(RFC 2449 §8, RFC 3206, RFC 6856 §3), ``+`` challenges during AUTH (RFC 5034),
and multi-line content (capability lines, listings, messages that stress
dot-stuffing). What a client reads, kept apart from what it writes
(``_pop3_strategies``); ``_pop3_responses`` is the ``check-pop3`` probe's
reader, not a strategy.
"""

from __future__ import annotations

import itertools
from typing import Final

from hypothesis import strategies as st

from smtpcore import pop3
from smtpcore.testing._pop3_strategies import (
    _MECHANISMS,
    _NUMBERS,
    _UNIQUE_IDS,
    Sent,
    pop3_capabilities,
)

__all__ = ["pop3_responses"]

_SIZES: Final = st.integers(0, 10**9)
_TEXT: Final = st.text(
    # Text a client reads back as it was sent: no control, format or separator
    # character, which a status line's reader masks (RFC 5198 §2, smtpcore._textsafe).
    st.characters(exclude_categories=("Cs", "Cc", "Cf", "Zl", "Zp"), exclude_characters="[]"),
    max_size=30,
).map(str.strip)
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
