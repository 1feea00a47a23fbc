"""Driving a server machine with bytes, answered by an application callable.

The loop every harness shares: feed bytes, take events until ``NEED_DATA``,
answer each with the application's replies, collect what the machine
writes. A BDAT is answered once its octets are in (RFC 3030 §2).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Final, TypeAlias

from smtpcore import NEED_DATA, PAUSED, pop3, sasl, smtp
from smtpcore._words import ascii_upper

__all__ = [
    "POP3Answer",
    "SMTPAnswer",
    "permissive_auth",
    "permissive_pop3_answer",
    "permissive_smtp_answer",
    "run_pop3_server",
    "run_server",
]

SMTPAnswer: TypeAlias = Callable[
    [smtp.ServerConnection, smtp.Event], "smtp.Reply | Sequence[smtp.Reply] | None"
]
"""The application around an SMTP server machine: the replies to one event
(one per accepted recipient for LMTP's end of content), or None for an event
that takes none (``MessageData``)."""

POP3Answer: TypeAlias = Callable[
    [pop3.ServerConnection, pop3.Event], "pop3.Event | Sequence[pop3.Event] | None"
]
"""The application around a POP3 server machine: the response to one event,
a multi-line one as ``Ok``, ``ResponseData``... and ``EndOfResponse``."""


def permissive_smtp_answer(
    conn: smtp.ServerConnection, event: smtp.Event
) -> smtp.Reply | list[smtp.Reply] | None:
    """Accept everything: each command gets its positive reply, a bad one the
    reply the machine suggests, LMTP's end of content one 250 per recipient
    (and content the machine rejects its suggested reply as many times as
    ``conn.replies_due`` says: once per recipient at its end, RFC 2033 §4.2).

    AUTH PLAIN and LOGIN run their exchange through :mod:`smtpcore.sasl`
    with any credentials (an empty 334 challenge for PLAIN without an
    initial response; ``Username:`` and ``Password:`` for LOGIN); ``*``
    cancels it with 501 (RFC 4954 §4); any other mechanism the machine
    lets through is accepted at once with 235.
    """
    if isinstance(event, smtp.RejectedMessage) and conn.lmtp:
        return [event.reply] * conn.replies_due
    if isinstance(event, smtp.BadCommand | smtp.RejectedMessage):
        return event.reply
    if isinstance(event, smtp.MessageData):
        return None
    if isinstance(event, smtp.Data):
        return smtp.Reply(354, "End data with <CR><LF>.<CR><LF>")
    if isinstance(event, smtp.Quit):
        return smtp.Reply(221, "Bye")
    if isinstance(event, smtp.StartTls):
        return smtp.Reply(220, "Ready to start TLS")
    if isinstance(event, smtp.Xclient):
        return smtp.Reply(220, f"{conn.hostname} ESMTP")
    if isinstance(event, smtp.Help):
        return smtp.Reply(214, "See RFC 5321")
    if isinstance(event, smtp.Auth | smtp.AuthResponse):
        return _smtp_sasl_answer(conn, event)
    ends = isinstance(event, smtp.EndOfMessage) or (isinstance(event, smtp.Bdat) and event.last)
    if ends and conn.lmtp:
        return [smtp.Reply(250, "Delivered")] * conn.accepted_recipients
    if ends:
        return smtp.Reply(250, "Queued")
    return smtp.Reply(250, "OK")


def run_server(
    conn: smtp.ServerConnection,
    data: bytes = b"",
    *,
    answer: SMTPAnswer = permissive_smtp_answer,
) -> tuple[list[smtp.Event], bytes]:
    """Feed ``data`` (if any) to an SMTP server machine, answer every event
    with ``answer``, and return the events and the bytes the machine wrote.

    Stops at ``NEED_DATA``, at ``ConnectionClosed``, or at an event the
    application left unanswered.

    >>> from smtpcore.smtp import Reply, ServerConnection
    >>> conn = ServerConnection("mx.test")
    >>> greeting = conn.send(Reply(220, "mx.test ESMTP"))
    >>> events, out = run_server(conn, b"EHLO client.test\\r\\nNOOP\\r\\n")
    >>> out.splitlines()[-1]
    b'250 2.0.0 OK'
    """
    if data:
        conn.receive_data(data)
    events: list[smtp.Event] = []
    out = bytearray()
    while True:
        event = conn.next_event()
        pending = conn.pending
        if event is PAUSED and isinstance(pending, smtp.Bdat):
            out += _replies(conn, answer(conn, pending))
            if conn.pending is pending:
                return events, bytes(out)  # the application left it unanswered
            continue
        if event is NEED_DATA or event is PAUSED:
            return events, bytes(out)
        events.append(event)
        if isinstance(event, smtp.ConnectionClosed):
            return events, bytes(out)
        if isinstance(event, smtp.Bdat):
            continue  # answered once its octets are in
        out += _replies(conn, answer(conn, event))


def _replies(
    conn: smtp.ServerConnection, answer: smtp.Reply | Sequence[smtp.Reply] | None
) -> bytes:
    if answer is None:
        return b""
    if isinstance(answer, smtp.Reply):
        return conn.send(answer)
    return b"".join(conn.send(reply) for reply in answer)


def _anyone(authzid: str, authcid: str, password: str) -> bool:
    return True


def _anybody(authzid: str, authcid: str) -> bool:
    return True


_PERMISSIVE_MECHANISMS: Final[dict[str, Callable[[], sasl.ServerMechanism]]] = {
    "PLAIN": lambda: sasl.PlainServer(_anyone, authorize=_anybody),
    "LOGIN": lambda: sasl.LoginServer(_anyone),
}


def permissive_auth() -> smtp.ServerAuth:
    """An SMTP AUTH exchange for PLAIN and LOGIN that takes any credentials."""
    return smtp.ServerAuth(_PERMISSIVE_MECHANISMS)


_SMTP_EXCHANGE: Final = "smtpcore.testing exchange"
"""Where the permissive answer keeps an SMTP connection's SASL exchange: a key of
the machine's own ``__dict__`` (which it keeps for the application's use) that
no attribute name can take. The machine has slots and no weak references."""


def _smtp_sasl_answer(
    conn: smtp.ServerConnection, event: smtp.Auth | smtp.AuthResponse
) -> smtp.Reply:
    exchanges = vars(conn)
    if isinstance(event, smtp.Auth):
        if ascii_upper(event.mechanism) not in _PERMISSIVE_MECHANISMS:
            return smtp.Reply(235, "Authentication successful", "2.7.0")
        auth = exchanges[_SMTP_EXCHANGE] = permissive_auth()
        reply = auth.start(event)
    else:
        running: smtp.ServerAuth | None = exchanges.get(_SMTP_EXCHANGE)
        if event.cancel or running is None:
            exchanges.pop(_SMTP_EXCHANGE, None)
            if event.cancel:
                return smtp.Reply(501, "Authentication cancelled", "5.0.0")
            return smtp.Reply(235, "Authentication successful", "2.7.0")
        reply = running.step(event)
    if reply.code != 334:
        exchanges.pop(_SMTP_EXCHANGE, None)
    return reply


_EXCHANGES: Final[weakref.WeakKeyDictionary[pop3.ServerConnection, sasl.ServerMechanism]] = (
    weakref.WeakKeyDictionary()
)
"""The SASL exchange under way on each connection the permissive answer serves."""


def permissive_pop3_answer(
    conn: pop3.ServerConnection, event: pop3.Event
) -> list[pop3.Event] | None:
    """Accept everything: ``+OK`` to each command, the suggested ``-ERR`` to a
    bad command, and for multi-line commands the machine's own capability
    lines (:meth:`~smtpcore.pop3.ServerConnection.capabilities`), a
    one-message listing or a short message.

    AUTH PLAIN and LOGIN run their exchange with any credentials (an empty
    ``+`` challenge for PLAIN without an initial response; ``Username:``
    and ``Password:`` for LOGIN, RFC 5034 §4); ``*`` cancels it with
    ``-ERR``; any other mechanism is accepted at once.
    """
    if isinstance(event, pop3.BadCommand):
        _EXCHANGES.pop(conn, None)  # an unreadable SASL response ends the exchange
        return [event.response]
    if isinstance(event, pop3.Auth | pop3.AuthResponse):
        return [_sasl_answer(conn, event)]
    if not isinstance(event, pop3.Command):
        return None
    if isinstance(event, pop3.Stat):
        return [pop3.Ok("1 120")]
    if isinstance(event, pop3.List | pop3.Uidl) and event.message is not None:
        value = "120" if isinstance(event, pop3.List) else f"uid{event.message}"
        return [pop3.Ok(f"{event.message} {value}")]
    if not event.multiline:
        return [pop3.Ok()]
    if isinstance(event, pop3.Capa):
        body = pop3.format_lines(conn.capabilities())
    elif isinstance(event, pop3.AuthMechanisms):
        body = pop3.format_lines(conn.offered_mechanisms())
    elif isinstance(event, pop3.Uidl):
        body = b"1 uid1\r\n"
    elif isinstance(event, pop3.List):
        body = b"1 120\r\n"
    else:
        body = b"Subject: hi\r\n\r\n.leading dot\r\n"
    return [pop3.Ok(), pop3.ResponseData(body), pop3.EndOfResponse()]


def _sasl_answer(conn: pop3.ServerConnection, event: pop3.Auth | pop3.AuthResponse) -> pop3.Event:
    if isinstance(event, pop3.Auth):
        factory = _PERMISSIVE_MECHANISMS.get(event.mechanism)
        if factory is None:
            return pop3.Ok()
        mechanism = _EXCHANGES[conn] = factory()
        step = mechanism.start(event.initial_response)
    else:
        running = _EXCHANGES.get(conn)
        if event.cancel:
            _EXCHANGES.pop(conn, None)
            return pop3.Err("Authentication cancelled")
        if running is None:
            return pop3.Ok()
        step = running.step(event.data)
    if isinstance(step, sasl.Challenge):
        return pop3.Continue(step.data)
    _EXCHANGES.pop(conn, None)
    if isinstance(step, sasl.Success):
        return pop3.Ok("Logged in")
    return pop3.Err(step.reason, code="SYS/TEMP" if step.temporary else "AUTH")


def run_pop3_server(
    conn: pop3.ServerConnection,
    data: bytes = b"",
    *,
    answer: POP3Answer = permissive_pop3_answer,
) -> tuple[list[pop3.Event], bytes]:
    """As :func:`run_server`, for a POP3 server machine."""
    if data:
        conn.receive_data(data)
    events: list[pop3.Event] = []
    out = bytearray()
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is PAUSED:
            return events, bytes(out)
        events.append(event)
        if isinstance(event, pop3.ConnectionClosed):
            return events, bytes(out)
        response = answer(conn, event)
        if response is None:
            continue
        for item in [response] if isinstance(response, pop3.Event) else response:
            out += conn.send(item)
