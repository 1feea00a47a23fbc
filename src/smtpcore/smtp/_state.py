"""The legal moves of an SMTP session, as data (RFC 5321 §4.1.4, §4.3.2).

One table serves both roles, as h11's ``_state.py`` does: the server checks
the commands it receives against it, the client the commands it sends, and
both move on the same reply codes. Each rule names the states a command is
allowed in, the reply codes that count as success, and where success and
failure lead.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from smtpcore.smtp._events import (
    Auth,
    Bdat,
    Command,
    Data,
    Ehlo,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
    Xclient,
    Xforward,
)

__all__ = [
    "END_OF_DATA_RULE",
    "KEEP",
    "RESET",
    "RULES",
    "SESSION",
    "Rule",
    "State",
    "next_state",
    "replies_after_content",
]


class State(enum.Enum):
    """Where a session stands."""

    # Identity hashing, in C: states are looked up in sets on every command, and
    # Enum.__hash__ (hashing the name) is Python code.
    __hash__ = object.__hash__

    GREETING = "GREETING"
    """Connected; the server has not greeted yet."""
    NO_SERVICE = "NO_SERVICE"
    """Greeted with 554: only QUIT is served (RFC 5321 §3.1)."""
    HELLO = "HELLO"
    """Greeted; waiting for EHLO, HELO or LHLO (also right after STARTTLS)."""
    READY = "READY"
    """Hello done, no mail transaction open."""
    MAIL = "MAIL"
    """MAIL accepted, no recipient yet."""
    RCPT = "RCPT"
    """At least one recipient accepted."""
    DATA = "DATA"
    """354 sent: message content flows until CRLF.CRLF."""
    BDAT = "BDAT"
    """Inside a BDAT transaction (RFC 3030): chunks flow, each answered."""
    AUTH = "AUTH"
    """A SASL exchange is under way (RFC 4954)."""
    TLS_PENDING = "TLS_PENDING"
    """STARTTLS accepted; nothing more is read until the handshake is done."""
    CLOSED = "CLOSED"
    """The session is over (221 or 421 sent, or the peer went away)."""
    ERROR = "ERROR"
    """The protocol broke down; sticky, as in h11."""


class _Marker(enum.Enum):
    KEEP = "KEEP"
    RESET = "RESET"


KEEP: Final = _Marker.KEEP
"""Stay in the current state."""
RESET: Final = _Marker.RESET
"""Abandon the transaction: back to READY, or stay in HELLO before a hello."""

SESSION: Final = frozenset({State.HELLO, State.READY, State.MAIL, State.RCPT, State.BDAT})
"""States in which a new command may start (BDAT: between two chunks)."""

DISCARDING: Final = frozenset({State.TLS_PENDING, State.CLOSED, State.ERROR})
"""States whose received bytes are dropped: plaintext before the TLS handshake (RFC 3207 §4.2),
and bytes no event will ever be read from (memory stays bounded)."""


@dataclass(frozen=True, slots=True)
class Rule:
    allowed: frozenset[State]
    success_codes: frozenset[int]
    on_success: State | _Marker
    on_failure: State | _Marker = KEEP
    intermediate: frozenset[int] = frozenset()
    greets: bool = False
    """Its answer is a new greeting (XCLIENT's): a 554 refuses service as a 554
    greeting does, leaving QUIT alone to be served (RFC 5321 §3.1)."""

    def accepts(self, code: int) -> bool:
        return code in self.success_codes or code in self.intermediate or code >= 400

    def move(self, code: int, current: State) -> State | None:
        """Where ``code`` leads from ``current`` (as :func:`next_state`), or None when
        it is no answer to this command (``accepts`` false): the two in one call, for
        the server's answer to every command. A test holds it to the two."""
        if code in self.success_codes:
            target = self.on_success
        elif code >= 400:
            if code == 421:
                return State.CLOSED
            if code == 554 and self.greets:
                return State.NO_SERVICE
            target = self.on_failure
        elif code in self.intermediate:
            return State.AUTH
        else:
            return None
        if target is KEEP:
            return current
        if target is RESET:  # RSET's: read as globals, as enum members cost a hook
            return _HELLO if current is _HELLO else _READY
        return target


_HELLO: Final = State.HELLO
_READY: Final = State.READY
_OK: Final = frozenset({250})
_HELLO_RULE: Final = Rule(SESSION, _OK, State.READY)
_ANYTIME: Final = frozenset(range(200, 300))

RULES: Final[dict[type[Command], Rule]] = {
    Ehlo: _HELLO_RULE,
    Helo: _HELLO_RULE,
    Lhlo: _HELLO_RULE,
    Mail: Rule(frozenset({State.READY}), _OK, State.MAIL),
    Rcpt: Rule(frozenset({State.MAIL, State.RCPT}), frozenset({250, 251, 252}), State.RCPT),
    Data: Rule(frozenset({State.RCPT}), frozenset({354}), State.DATA),
    Bdat: Rule(frozenset({State.RCPT, State.BDAT}), _OK, State.BDAT, RESET),
    Rset: Rule(SESSION, _OK, RESET),
    Noop: Rule(SESSION, _OK, KEEP),
    Vrfy: Rule(SESSION, _ANYTIME, KEEP),
    Expn: Rule(SESSION, _ANYTIME, KEEP),
    Help: Rule(SESSION, frozenset({211, 214}), KEEP),
    Quit: Rule(SESSION | {State.NO_SERVICE}, frozenset({221}), State.CLOSED),
    StartTls: Rule(frozenset({State.READY}), frozenset({220}), State.TLS_PENDING),
    # Postfix's XCLIENT restarts the session at the greeting stage: EHLO comes again. It
    # may come at any time outside a transaction, back to back as well (XCLIENT_README).
    Xclient: Rule(
        frozenset({State.HELLO, State.READY}), frozenset({220}), State.HELLO, greets=True
    ),
    Xforward: Rule(frozenset({State.READY}), _OK, KEEP),
    Auth: Rule(
        frozenset({State.READY}),
        frozenset({235}),
        State.READY,
        State.READY,
        intermediate=frozenset({334}),
    ),
}
"""Command type -> rule. The end of message content answers like a command
whose success and failure both lead back to READY; the client's answers to
334 challenges (``AuthResponse``) are answered under the ``Auth`` rule."""

END_OF_DATA_RULE: Final = Rule(frozenset({State.DATA, State.BDAT}), _OK, State.READY, State.READY)


def replies_after_content(*, lmtp: bool, accepted: int, reached_end: bool) -> int:
    """How many replies answer the end of a message's content, the same count for the
    server that sends them and the client that waits for them.

    LMTP gives one per accepted recipient, but only to content that reached its end
    (RFC 2033 §4.2). A chunk refused before the last ends the transaction with that
    one refusal (RFC 3030 §2), and the ``BDAT ... LAST`` pipelined behind it, its
    content discarded, is answered once, as any command out of sequence is. SMTP
    answers the end of the content once (RFC 5321 §4.1.1.4)."""
    if lmtp and reached_end:
        return max(accepted, 1)
    return 1


def next_state(rule: Rule, code: int, current: State) -> State:
    """Where the session goes when ``code`` answers a command under ``rule``."""
    if code == 421:
        return State.CLOSED
    if code in rule.intermediate:
        return State.AUTH
    if code == 554 and rule.greets:
        return State.NO_SERVICE
    target = rule.on_success if code in rule.success_codes else rule.on_failure
    if target is KEEP:
        return current
    if target is RESET:
        return State.HELLO if current is State.HELLO else State.READY
    return target
