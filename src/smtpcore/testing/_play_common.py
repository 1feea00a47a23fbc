"""What the SMTP and POP3 session players share: the deadline each gives, the part
of a group still to send after a refusal, the words for a group and a flood, and
the TLS context that checks no certificate.

A property about a real server needs the server's answers to the session it
was given, in order, however wrong the server is. Reading a fixed number of
answers with a long socket timeout fails exactly when the server has the bug
being looked for: a server that desynchronises (SMTP smuggling makes it owe
fewer replies, or more) has each example wait out the timeout, and shrinking,
which runs hundreds of examples, gives up with junk left in the example and a
``TimeoutError`` reported as a failure of its own. So both players give each
group of commands one short deadline (:data:`DEFAULT_TIMEOUT` by default) for
its write and its answers, and stop at the first answer that does not come.

Kept apart so that neither protocol's player imports the other's. Nothing here
imports Hypothesis.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from smtpcore.testing._wire import ServerFlood

__all__ = ["DEFAULT_TIMEOUT", "_flooded", "_insecure_context", "_named", "_sendable"]

DEFAULT_TIMEOUT: Final = 2.0
"""Seconds a player gives the connection and greeting, each group (its write and all
its answers) and the close: long for a server on loopback, short enough that a
shrinking run of hundreds of examples that wait it out ends in minutes."""

Item = TypeVar("Item")


def _insecure_context() -> ssl.SSLContext:
    """TLS without certificate checks: a player tests the protocol, not the PKI."""
    from smtpcore.testing._battery import insecure_context as battery_context

    return battery_context()


def _flooded(exc: ServerFlood) -> str:
    return f"the server sent more than any session is owed: {exc}"


def _named(items: Sequence[object]) -> str:
    """A group as a reader of a failure wants it: the commands' names, or the bytes."""
    names = []
    for item in items:
        if isinstance(item, bytes):
            names.append(repr(item[:30]))
        else:
            names.append(getattr(item, "keyword", type(item).__name__))
    return ", ".join(str(name) for name in names)


def _sendable(group: Sequence[Item], may_lead: Callable[[Item], bool]) -> tuple[Item, ...]:
    """``group`` from its first item that may lead it after the answers so far.

    An answer can refuse only the head of a group, what follows the command it
    answers: content after a refused DATA, an AUTH or POP3 SASL response with no
    challenge, PASS after a refused USER. That head is left out; the commands
    pipelined behind it still go (RFC 2920 §3.1, RFC 2449 §6.6), a QUIT among
    them, and the server owes their replies."""
    for index, item in enumerate(group):
        if may_lead(item):
            return tuple(group[index:])
    return ()
