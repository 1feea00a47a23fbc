"""QUIT in a POP3 server session, and the UPDATE state it starts (RFC 1939 §6): the
messages marked deleted removed, and the maildrop closed, its lock released.

:class:`Update` is where a session's maildrop ends, whichever way the session
does: committed by a QUIT in TRANSACTION, or only closed (:meth:`Update._release`)
on any other end, or when a login cannot finish listing it. Apart from the
TRANSACTION commands, which only mark what UPDATE does: both stand on the
mailstore's calls (:class:`~smtpcore._driver._pop3_server_store.StoreCalls`),
neither on the other, and read the marks from the fields the session's answers
declare.
"""

from __future__ import annotations

import logging
from typing import Final

from smtpcore._driver._logtext import loggable
from smtpcore._driver._pop3_server_store import StoreCalls
from smtpcore._plural import messages
from smtpcore.pop3 import Err, Ok, State

logger = logging.getLogger("smtpcore.pop3.server")

_NOT_REMOVED: Final = Err("Some deleted messages were not removed", code="SYS/TEMP")


class Update(StoreCalls):
    """QUIT, UPDATE, and the maildrop's close."""

    __slots__ = ()

    async def _quit(self) -> None:
        conn = self.conn
        assert conn is not None
        hostname = self.options.hostname
        if conn.state is not State.UPDATE:
            self._answer(Ok(f"{hostname} POP3 server signing off"))
            return
        maildrop = self.maildrop
        assert maildrop is not None
        deleted = self.numbers.deleted
        user = self.session.user
        # Two deadlines: UPDATE never starts with one the wait has used up.
        for step, call in (
            ("wait before the UPDATE of %r", maildrop.before_update),
            ("UPDATE of %r", lambda: maildrop.update(deleted, frozenset(self.retrieved))),
        ):
            try:
                await self._store(call)
            except BaseException as exc:
                if not self._call_failed(exc):
                    raise
                self._answer(self._failure(exc, step, user, answer=_NOT_REMOVED))
                return
        left = len(self.numbers)
        self._answer(Ok(f"{hostname} POP3 server signing off ({messages(left)} left)"))

    async def _release(self) -> None:
        """Close the maildrop, releasing its lock (RFC 1939 §6), under the store
        timeout: a close that hangs must not hold the session and its connection."""
        maildrop, self.maildrop = self.maildrop, None
        if maildrop is not None:
            try:
                await self._store(maildrop.close)
            except BaseException as exc:
                if not self._call_failed(exc):
                    raise
                user = loggable(str(self.session.user))
                if not self._timed_out(exc, "closing the maildrop of %s", user):
                    logger.exception("closing the maildrop of %s failed", user)
