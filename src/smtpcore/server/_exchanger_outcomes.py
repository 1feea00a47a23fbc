"""What one exchanger session decides: an :class:`Outcome` per recipient from the reply
that answers it, or :class:`TryNext` when the session failed as a whole. Apart from
the session because the worker, the queue bookkeeping and the reports read outcomes
too."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from smtpcore.server._exchanger_replies import reply_dsn
from smtpcore.server.queue import RecipientStatus
from smtpcore.smtp import Reply

__all__ = ["Outcome", "TryNext", "_OutcomeOf", "_SessionFull", "_too_many_recipients"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one round did for one recipient."""

    status: RecipientStatus
    dsn: str
    detail: str
    relay: str = "none"
    remote_mta: str | None = None
    from_remote: bool = False
    tls: str | None = None
    """``no``, ``yes`` or ``verified``: see ``ExchangerSession._tls_field``."""
    tls_policy: str | None = None
    dsn_passed: bool = False
    """The next hop took the DSN parameters: reporting success is its job now."""
    expired: bool = False
    """Failed because the message's time in the queue ran out: a temporary failure
    past its lifetime (the bounce then says how long it was retried)."""
    server_policy: bool = False
    """Failed by this server's own rule, not by a peer nor by the sender's choice (a
    queued sender that no longer parses): reported whatever NOTIFY and RET asked."""
    logged: str | None = None
    """What the mail log says instead of :attr:`detail`, which the queue file and the
    sender's report keep, where the operator is told more than the sender (the
    Maildir file a local copy went into)."""
    detail_breaks: tuple[int, ...] = ()
    """Where :attr:`detail`, a reply
    :func:`~smtpcore.server._exchanger_replies.transcribe` wrote, has the spaces between
    its lines; none for other text."""


class TryNext(Exception):
    """This exchanger failed as a whole; the next one may do better.

    ``requiretls``: it failed only this message's REQUIRETLS (no verified TLS, or no
    REQUIRETLS offered, RFC 8689 §4.2.1); nothing is wrong with it for other mail.
    ``settled``: the recipients the session had delivered (2xx) or refused for good
    (5xx, RFC 5321 §4.2.1) before it failed, and their outcomes; the next exchanger
    gets only the others.
    ``permanent``: the exchanger refused this client for good (see
    :func:`~smtpcore.server._exchanger_connect._refused_for_good`): the next one is
    still tried, and only if every one tried refused so do the recipients fail at once,
    as for any 5xx; one that deferred may take the mail later, so they wait (RFC 5321
    §5.1).
    ``unreachable``: the exchanger could not be reached, or would not talk for now (a
    connection refused, lost or timed out before the mail transaction, a 4xx or 5xx
    greeting, a 4xx to EHLO and HELO): what suspends a dead destination
    (:mod:`smtpcore.server.deadhops`) when all its exchangers fail so.
    """

    def __init__(
        self,
        detail: str,
        dsn: str | None = None,
        reply: Reply | None = None,
        *,
        requiretls: bool = False,
        settled: Mapping[str, Outcome] | None = None,
        local: bool = False,
        permanent: bool = False,
        unreachable: bool = False,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent
        self.unreachable = unreachable
        self.dsn = dsn or (reply_dsn(reply) if reply is not None else "4.4.1")
        """The status a delay or bounce gives: the one named, else the server's own
        (RFC 3464 §2.3.4), else 4.4.1 (no answer from the host)."""
        self.reply = reply
        self.requiretls = requiretls
        self.settled: Mapping[str, Outcome] = settled or {}
        self.local = local
        """``reply`` is the client's own (``SMTPError.local``), not the exchanger's: a
        report does not give it as the server's (RFC 3464 §2.3.6)."""


class _SessionFull(Exception):
    """The client stopped at the exchanger's MAILMAX or RCPTDOMAINMAX: ``outcomes`` for
    the recipients the session answered, ``unsent`` the others, for a new session."""

    def __init__(self, outcomes: dict[str, Outcome], unsent: list[str]) -> None:
        super().__init__("the exchanger's LIMITS MAILMAX or RCPTDOMAINMAX was reached")
        self.outcomes = outcomes
        self.unsent = unsent


class _OutcomeOf(Protocol):
    """Makes a recipient's outcome from a reply (``ExchangerSession._send``)."""

    def __call__(
        self, reply: Reply, *, from_remote: bool = True, to_rcpt: bool = False
    ) -> Outcome: ...


def _too_many_recipients(reply: Reply, *, to_rcpt: bool) -> bool:
    """Whether ``reply`` is RFC 821's misnumbered 452: RFC 5321 §4.5.3.1.10 says a client
    SHOULD take a 552 to RCPT as temporary, as Postfix's client does (it reads it as
    452, its enhanced status class as 4). After the content, 552 is for good (§4.2.2)."""
    return to_rcpt and reply.code == 552
