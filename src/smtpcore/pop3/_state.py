"""The legal moves of a POP3 session, as data (RFC 1939 §3-§6, RFC 2449, 2595, 5034, 6856).

One table serves both roles, as h11's ``_state.py`` does: the server checks
the commands it receives against it, the client the commands it sends, and
both move on the same ``+OK``, ``-ERR`` or ``+`` answers. A command missing
from the table for a state is not allowed there.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from smtpcore.pop3._events import (
    Apop,
    Auth,
    AuthMechanisms,
    AuthResponse,
    BadCommand,
    Capa,
    Dele,
    Event,
    List,
    Noop,
    Pass,
    Quit,
    Retr,
    Rset,
    Stat,
    Stls,
    Top,
    Uidl,
    User,
    Utf8,
)

__all__ = ["ALONE", "COMMAND_STATES", "MOVES", "Move", "State", "allowed_in"]


class State(enum.Enum):
    """Where a session stands (RFC 1939 §3)."""

    # Identity hashing, in C: states are looked up in sets on every command, and
    # Enum.__hash__ (hashing the name) is Python code.
    __hash__ = object.__hash__

    GREETING = "GREETING"
    """Connected; the server has not greeted yet."""
    AUTHORIZATION = "AUTHORIZATION"
    """Greeted; the client must identify itself (also right after STLS)."""
    USER = "USER"
    """USER accepted; PASS is expected (a part of AUTHORIZATION, RFC 1939 §7)."""
    SASL = "SASL"
    """An AUTH exchange is under way: challenges and responses (RFC 5034 §4)."""
    TLS_PENDING = "TLS_PENDING"
    """STLS accepted; nothing more is read until the handshake is done."""
    TRANSACTION = "TRANSACTION"
    """Logged in, the maildrop locked."""
    UPDATE = "UPDATE"
    """QUIT received in TRANSACTION: deletions are committed, then +OK or -ERR."""
    CLOSED = "CLOSED"
    """The session is over."""
    ERROR = "ERROR"
    """The protocol broke down; sticky, as in h11."""


COMMAND_STATES: Final = frozenset({State.AUTHORIZATION, State.USER, State.TRANSACTION})
"""States in which a new command may be sent."""

DISCARDING: Final = frozenset({State.TLS_PENDING, State.CLOSED, State.ERROR})
"""States whose received bytes are dropped: plaintext before the TLS handshake (RFC 2595 §4),
and bytes no event will ever be read from (memory stays bounded)."""


@dataclass(frozen=True, slots=True)
class Move:
    """What an answer to a command does to the session.

    ``None`` means the state stays as it is. ``during`` is the state the
    session is in while the answer is awaited, when that differs (QUIT in
    TRANSACTION enters UPDATE before the server answers). ``on_continue`` is
    set where a ``+`` continuation may answer (AUTH). ``alone`` marks a command
    nothing may be pipelined behind: a client cannot tell where its answer ends
    without knowing which form the server chose (a bare AUTH, answered with a
    listing by some servers and with one line by others).
    """

    on_ok: State | None = None
    on_err: State | None = None
    during: State | None = None
    on_continue: State | None = None
    alone: bool = False


_STAY: Final = Move()
# No RFC defines a bare AUTH (RFC 5034 §4 needs a mechanism): Dovecot answers it
# with a listing, other servers with one line.
_LISTING: Final = Move(alone=True)
_LOGIN: Final = Move(State.TRANSACTION, State.AUTHORIZATION)
_SASL: Final = Move(State.TRANSACTION, State.AUTHORIZATION, on_continue=State.SASL)
_USER: Final = Move(State.USER, State.AUTHORIZATION)
_BYE: Final = Move(State.CLOSED, State.CLOSED)
_AUTHORIZATION: Final = (State.AUTHORIZATION, State.USER)

MOVES: Final[dict[tuple[State, type[Event]], Move]] = {
    **{(state, User): _USER for state in _AUTHORIZATION},
    (State.USER, Pass): _LOGIN,
    **{(state, Apop): _LOGIN for state in _AUTHORIZATION},
    **{(state, Auth): _SASL for state in _AUTHORIZATION},
    **{(state, AuthMechanisms): _LISTING for state in _AUTHORIZATION},
    (State.SASL, AuthResponse): _SASL,
    # An unreadable SASL response ends the exchange (RFC 5034 §4).
    (State.SASL, BadCommand): Move(on_err=State.AUTHORIZATION),
    **{(state, Capa): _STAY for state in (*_AUTHORIZATION, State.TRANSACTION)},
    (State.AUTHORIZATION, Stls): Move(on_ok=State.TLS_PENDING),
    **{(state, Utf8): _STAY for state in _AUTHORIZATION},
    **{(state, Quit): _BYE for state in _AUTHORIZATION},
    **{
        (State.TRANSACTION, command): _STAY
        for command in (Stat, List, Retr, Dele, Noop, Rset, Top, Uidl)
    },
    (State.TRANSACTION, Quit): Move(State.CLOSED, State.CLOSED, during=State.UPDATE),
}
"""(state, event type) -> move, for every command allowed in that state."""


def allowed_in(event: type[Event]) -> frozenset[State]:
    """The states in which ``event`` may be sent."""
    return frozenset(state for state, kind in MOVES if kind is event)


ALONE: Final = frozenset(kind for (_, kind), move in MOVES.items() if move.alone)
"""Commands nothing may be pipelined behind, whatever the state (see :class:`Move`)."""
