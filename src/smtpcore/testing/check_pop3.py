"""Check any POP3 server, in any language, for the bugs that split two readers of a session.

:func:`check_pop3_server` connects to a host and port, logs in as the user
given, and runs a battery of checks (:data:`POP3_CHECKS`) over real sockets,
each on fresh connections. It returns a
:class:`~smtpcore.testing.check.CheckReport`, as the SMTP battery does: every
check passed, failed or skipped (an extension the server does not offer, or
no message to work on), and every failure carries its transcript, byte for
byte.

The checks never lose the user's mail. A session that sent ``RETR``,
``TOP`` or ``DELE`` (or a line a server might read as one) never sends
``QUIT``: it ends with ``RSET`` and ``NOOP`` and the connection closed
without ``QUIT``, and a server deletes nothing then (RFC 1939 §6), not even
what a delete-after-download policy would. Only sessions that touched no
message end with ``QUIT``: logins, ``CAPA``, ``UIDL``, ``LIST``, ``STAT``,
``STLS`` and the long ``USER`` lines (see
:mod:`~smtpcore.testing._pop3_session_end`; the connection refusing to write
``QUIT`` after such a line is :mod:`~smtpcore.testing._pop3_wire`'s). Either
way a response the server owes no one (a command read from inside a line, a
message or a TLS handshake) is counted, not missed.

This module is the registry and the runner. Each check is a function of a
``POP3Probe`` (``_pop3_probe``: connections and logins, ``_pop3_session_end``:
how a session ends; responses read by ``_pop3_responses``)
that returns a summary or raises to fail or skip, kept with its family in a
package-private module: ``_pop3_delivered`` (delivered-intact),
``_pop3_number_checks`` (number-edges), ``_pop3_state_checks``
(stls-injection, state-order), ``_pop3_limit_checks`` (command-line-length),
``_pop3_stream_checks`` (dot-stuffing, pipelining) and
``_pop3_mailbox_checks`` (deletion, uidl); ``_pop3_refusals`` holds the
sessions that number-edges and state-order send their refused lines on. A new
check goes in its family's module and is named in :data:`POP3_CHECKS`.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from smtpcore._ip import host_port
from smtpcore._secret import SECRET, secret_repr
from smtpcore.testing._battery import (
    CheckReport,
    CheckResult,
    Outcome,
    ServerUnreachable,
    check_run_arguments,
    run_one,
    selected,
)
from smtpcore.testing._delivery import Delivery, checked_recipient
from smtpcore.testing._pop3_deletion import (
    delete_delivered,
    failed_deletion_note,
    left_in_mailbox,
)
from smtpcore.testing._pop3_delivered import MAX_WAIT, check_delivered_intact
from smtpcore.testing._pop3_limit_checks import check_command_line_length
from smtpcore.testing._pop3_mailbox_checks import check_deletion, check_uidl
from smtpcore.testing._pop3_number_checks import check_number_edges
from smtpcore.testing._pop3_probe import POP3Probe
from smtpcore.testing._pop3_state_checks import check_state_order, check_stls_injection
from smtpcore.testing._pop3_stream_checks import check_dot_stuffing, check_pipelining
from smtpcore.testing._wire import checked_host

__all__ = ["POP3_CHECKS", "ServerUnreachable", "check_pop3_server"]


POP3_CHECKS: Final[Mapping[str, Callable[[POP3Probe], str]]] = {
    "delivered-intact": check_delivered_intact,
    "number-edges": check_number_edges,
    "stls-injection": check_stls_injection,
    "command-line-length": check_command_line_length,
    "dot-stuffing": check_dot_stuffing,
    "deletion": check_deletion,
    "uidl": check_uidl,
    "pipelining": check_pipelining,
    "state-order": check_state_order,
}
"""The battery, by name, in the order it runs. Each check returns a summary, or
raises to fail or be skipped; :func:`check_pop3_server` runs them.
``delivered-intact`` runs first, so that the others read the messages it delivers."""


def check_pop3_server(
    host: str,
    port: int,
    *,
    user: str,
    password: str,
    checks: Sequence[str] | None = None,
    timeout: float = 10.0,
    pause: float = 0.002,
    tls_context: ssl.SSLContext | None = None,
    deliver_via: tuple[str, int] | None = None,
    deliver_to: str | None = None,
    deliver_user: str | None = None,
    deliver_password: str | None = None,
    deliver_wait: float = 10.0,
    delete_delivered: bool = False,
) -> CheckReport:
    """Run the checks named in ``checks`` (all of :data:`POP3_CHECKS` by default)
    against the POP3 server at ``host:port``, logged in as ``user``.

    The mailbox needs one message at least (the checks that need one are
    skipped otherwise) and keeps every message: see the module's docstring.
    ``timeout`` bounds each wait (a whole response, a write, the TLS handshake,
    the close after QUIT); ``tls_context`` is used for STLS (by default, one
    that checks no certificate).

    With ``deliver_via=(smtp_host, smtp_port)``, ``delivered-intact`` first
    submits its test messages over SMTP to ``deliver_to`` (by default ``user``,
    which must then be a mailbox), with AUTH as ``deliver_user`` and
    ``deliver_password`` when given, STARTTLS (with ``tls_context``) where
    offered, and waits up to ``deliver_wait`` seconds for them over POP3. They
    are left in the mailbox, and the report's notes say how many a last session
    finds there (by their markers, not what SMTP took), unless
    ``delete_delivered``: then a last session deletes them, and only them, by
    their unique-ids and markers, and ends with QUIT; a new session looks for
    the markers after it, and the note counts as deleted only those it no
    longer finds.

    Raises ``ValueError`` for a host the socket calls cannot take, a port
    outside 1 to 65535, a ``timeout`` that is not a positive number, an
    unknown check name, a user or password (the delivery's too) with CR, LF
    or NUL, which would put commands of the caller's on the wire, or that
    UTF-8 cannot encode (a lone surrogate), a ``deliver_to`` that is
    no mailbox, ``deliver_user`` without ``deliver_password`` or the reverse, a
    ``deliver_wait`` outside 0 to 600 seconds, ``deliver_via`` with ``checks``
    that leave out ``delivered-intact``, or, without ``deliver_via``,
    ``delivered-intact`` named in ``checks`` or any other ``deliver_`` option or
    ``delete_delivered``; ``TypeError`` when
    ``checks`` is one str; :class:`ServerUnreachable` when the run's first
    connection fails.
    """
    run = pop3_run(
        host,
        port,
        user=user,
        password=password,
        checks=checks,
        timeout=timeout,
        pause=pause,
        tls_context=tls_context,
        deliver_via=deliver_via,
        deliver_to=deliver_to,
        deliver_user=deliver_user,
        deliver_password=deliver_password,
        deliver_wait=deliver_wait,
        delete_delivered=delete_delivered,
    )
    return run_pop3_checks(run)


@dataclass(frozen=True)
class POP3Run:
    """A run of the battery with its arguments checked (:func:`pop3_run`): what
    :func:`run_pop3_checks` needs, so that a caller (the CLI) tells a bad argument
    from what the run found."""

    host: str
    port: int
    user: str
    password: str = field(metadata=SECRET)
    names: tuple[str, ...]
    timeout: float
    pause: float
    tls_context: ssl.SSLContext | None
    delivery: Delivery | None
    delete_delivered: bool

    __repr__ = secret_repr


def pop3_run(
    host: str,
    port: int,
    *,
    user: str,
    password: str,
    checks: Sequence[str] | None,
    timeout: float,
    pause: float,
    tls_context: ssl.SSLContext | None,
    deliver_via: tuple[str, int] | None,
    deliver_to: str | None,
    deliver_user: str | None,
    deliver_password: str | None,
    deliver_wait: float,
    delete_delivered: bool,
) -> POP3Run:
    """The run :func:`check_pop3_server` describes, its arguments checked: the
    ``ValueError`` and ``TypeError`` it documents come from here, before any
    connection."""
    _check_word("password", password)
    names = check_pop3_arguments(
        host,
        port,
        user=user,
        checks=checks,
        timeout=timeout,
        pause=pause,
        deliver_via=deliver_via,
        deliver_to=deliver_to,
        deliver_wait=deliver_wait,
    )
    if deliver_via is None:
        _no_delivery_options(checks, deliver_to, deliver_user, deliver_password, delete_delivered)
        delivery = None
    else:
        for what, word in (("deliver_user", deliver_user), ("deliver_password", deliver_password)):
            if word is not None:
                _check_word(what, word)
        delivery = Delivery(
            deliver_via[0],
            deliver_via[1],
            deliver_to or user,
            deliver_user,
            deliver_password,
            wait=deliver_wait,
            tls_context=tls_context,
            timeout=timeout,
        )
    return POP3Run(
        host,
        port,
        user,
        password,
        tuple(names),
        timeout,
        pause,
        tls_context,
        delivery,
        delete_delivered,
    )


def check_pop3_arguments(
    host: str,
    port: int,
    *,
    user: str,
    checks: Sequence[str] | None,
    timeout: float,
    pause: float,
    deliver_via: tuple[str, int] | None,
    deliver_to: str | None,
    deliver_wait: float,
) -> list[str]:
    """The names of the checks to run, once every argument of :func:`pop3_run` that is
    no password nor a pairing with one is checked: what the CLI refuses before it
    asks for any password. Raises the ``ValueError`` and ``TypeError`` documented."""
    checked_host(host)
    _check_word("user", user)
    check_run_arguments(port, timeout, pause, checks)
    names = selected(POP3_CHECKS, checks)
    if deliver_via is not None:
        _check_delivery_target(deliver_via, deliver_to or user, deliver_wait, names)
    return names


def _check_word(what: str, word: object) -> None:
    """A user or password that can go on the wire as one argument (RFC 1939 §3), in
    UTF-8, as the battery sends it and seeks it to hide it (a lone surrogate has no
    octets to send)."""
    if not isinstance(word, str) or not word or any(c in word for c in "\r\n\0"):
        raise ValueError(f"{what} must be a non-empty str without CR, LF or NUL")
    try:
        word.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{what} must be text that UTF-8 can encode") from None


def run_pop3_checks(run: POP3Run) -> CheckReport:
    """Run the checked ``run``; :class:`ServerUnreachable` when its first connection fails."""
    results: list[CheckResult] = []
    reached = False  # a check skipped before connecting (no delivery asked) reached nothing
    for name in run.names:
        probe = POP3Probe(
            run.host, run.port, run.user, run.password, run.timeout, run.pause, run.tls_context
        )
        probe.delivery = run.delivery
        probe.after_session = reached
        result = run_one(name, POP3_CHECKS[name], probe, first=not reached)
        reached = reached or bool(probe.clients)
        results.append(probe.hide_credentials(result))
    notes = _delivery_notes(run)
    return CheckReport(host_port(run.host, run.port), tuple(results), notes)


def _no_delivery_options(
    checks: Sequence[str] | None,
    deliver_to: str | None,
    deliver_user: str | None,
    deliver_password: str | None,
    delete_delivered: bool,
) -> None:
    """Refuse what asks for a delivery without ``deliver_via``: it would be ignored, and
    ``delivered-intact`` asked by name would skip without a connection."""
    given = {
        "delivered-intact in checks": checks is not None and "delivered-intact" in checks,
        "deliver_to": deliver_to is not None,
        "deliver_user": deliver_user is not None,
        "deliver_password": deliver_password is not None,
        "delete_delivered": delete_delivered,
    }
    asked = [what for what, present in given.items() if present]
    if asked:
        raise ValueError(f"{', '.join(asked)} needs deliver_via (--deliver-via HOST:PORT)")


def _check_delivery_target(
    via: tuple[str, int], recipient: str, wait: float, names: Sequence[str]
) -> None:
    """Where and for how long the delivery goes, checked: the SMTP host and port, the
    recipient a mailbox (RFC 5321 §4.1.2), the wait bounded, delivered-intact run."""
    if "delivered-intact" not in names:
        raise ValueError("deliver_via is for the delivered-intact check, which checks leave out")
    smtp_host, smtp_port = via
    checked_host(smtp_host)
    check_run_arguments(smtp_port, 1.0, 0.0, None)
    if not math.isfinite(wait) or not 0 <= wait <= MAX_WAIT:
        raise ValueError(f"deliver_wait must be from 0 to {MAX_WAIT:g} seconds, not {wait!r}")
    checked_recipient(recipient)


def _delivery_notes(run: POP3Run) -> tuple[str, ...]:
    """What the report says of the test messages: how many a last session finds left
    in the mailbox, or how many it deleted."""
    delivery = run.delivery
    if delivery is None or not delivery.messages:
        return ()
    probe = POP3Probe(run.host, run.port, run.user, run.password, delivery.timeout)
    probe.delivery = delivery
    if not run.delete_delivered:
        left = run_one("left-delivered", lambda p: left_in_mailbox(p, delivery), probe)
        return (probe.hide_credentials(left).summary,)
    outcome = probe.hide_credentials(
        run_one("delete-delivered", lambda p: delete_delivered(p, delivery), probe)
    )
    if outcome.outcome is Outcome.PASSED:
        return (outcome.summary,)
    return (failed_deletion_note(delivery, outcome.summary),)
