"""What every listener's handler does whatever the message: the session's counts
(:class:`_Stats`) and its ``disconnect from`` line, and the one line each refusal is
logged with, a failed write's refusal among them.

The base of the handlers in :mod:`smtpcore.server.app`; the parts that route, spool and
commit a message build on it and log through it, so that every refusal reads alike.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from smtpcore._driver._failures import failure_reply, fault_text, no_room
from smtpcore._driver._refusals import only_recipient, path_text
from smtpcore.handler import Envelope, Handler, Session
from smtpcore.routing import Router
from smtpcore.server._app_store import MailStore
from smtpcore.server.log import client_text, loggable, logger, refusal_line
from smtpcore.smtp import Reply

__all__ = ["_MailSession", "_Stats"]


@dataclass(slots=True)
class _Stats:
    """One session's counts, for its log line."""

    start: float = field(default_factory=time.monotonic)
    mail: int = 0
    rcpt: int = 0
    accepted: int = 0
    queue_ids: list[str] = field(default_factory=list)


class _MailSession(Handler):
    """The handlers' base: the session's counts and log lines, and refusals logged."""

    listener = "smtp"
    lmtp = False

    def __init__(self, store: MailStore, router: Router) -> None:
        self.store = store
        self.router = router
        self.config = store.config

    # -- session ---------------------------------------------------------------

    async def handle_connect(self, session: Session) -> Reply | None:
        """The session's counts start: at the connection, and again for the client a
        trusted XCLIENT names, whose part of the session starts then."""
        session.extra["stats"] = _Stats()
        return None

    async def handle_close(self, session: Session) -> None:
        """The ``disconnect from`` line: at the end of the connection, and of a
        proxy's part of it at a trusted XCLIENT (before its ``XCLIENT from`` line)."""
        stats: _Stats = session.extra.get("stats") or _Stats()
        # "yes" for TLS whose version a proxy that ended it did not name.
        tls = (session.tls.version or "yes") if session.tls is not None else "no"
        auth = session.authenticated
        logger.info(
            "%s: disconnect from %s helo=%s tls=%s auth=%s mail=%d rcpt=%d/%d messages=%d%s "
            "duration=%.2fs",
            self.listener,
            client_text(session),
            loggable(session.helo_name or "-"),
            tls,
            "-" if auth is None else loggable(str(auth)),
            stats.mail,
            stats.accepted,
            stats.rcpt,
            len(stats.queue_ids),
            f" ({','.join(stats.queue_ids)})" if stats.queue_ids else "",
            time.monotonic() - stats.start,
        )

    def _refuse(
        self,
        session: Session,
        command: str,
        reply: Reply,
        *,
        sender: str | None = None,
        recipient: object = None,
        queue_id: str | None = None,
        detail: str | None = None,
        level: int = logging.INFO,
    ) -> Reply:
        """Log a refusal, one line (at INFO unless ``level`` says otherwise) with the
        client and the reply (and the server's own reason, ``detail``), and return it."""
        logger.log(
            level,
            refusal_line(
                self.listener,
                session,
                command,
                reply,
                queue_id=queue_id,
                sender=sender,
                recipient=None if recipient is None else str(recipient),
                helo=session.helo_name,
                user=None if session.authenticated is None else str(session.authenticated),
                detail=detail,
            ),
        )
        return reply

    def _storage_failed(
        self,
        session: Session,
        envelope: Envelope,
        exc: BaseException,
        what: str,
        *,
        queue_id: str | None = None,
        recipient: str | None = None,
    ) -> Reply:
        """The reply a failed write of the message earns (:func:`failure_reply`),
        logged. A write that found no room (:func:`no_room`: a full disk, a spent quota,
        a file size limit) is the expected state it names, and refuses the message as a
        policy does: one ``reject: DATA`` line with the write's reason, no traceback
        (RFC 5321 §4.2.2 452, RFC 3463 X.3.1 and X.3.4), at WARNING, as the floor check
        warns of the same state at MAIL (``freespace``): mail is being refused until
        the operator makes room. Any other failure is a fault, refused all the same: its
        ``reject: DATA`` line, every refusal having one, with ``what`` and the error as
        its reason, then ``what`` with its traceback."""
        why = no_room(exc)
        reply = failure_reply(exc)
        self._refuse(
            session,
            "DATA",
            reply,
            sender=path_text(envelope.sender),
            recipient=recipient
            if recipient is not None
            else only_recipient([r.mailbox for r in envelope.recipients]),
            queue_id=queue_id,
            detail=why if why is not None else f"{what}: {fault_text(exc)}",
            level=logging.WARNING,
        )
        if why is None:
            logger.error("%s%s", f"{queue_id}: " if queue_id else "", what, exc_info=exc)
        return reply

    def _stats(self, session: Session) -> _Stats:
        stats = session.extra.get("stats")
        if not isinstance(stats, _Stats):
            stats = session.extra["stats"] = _Stats()
        return stats
