"""The mailstore's calls in a POP3 server session: each under the ``store`` timeout,
and the answer and the one log line each failure earns.

:class:`StoreCalls` is separate from the commands that make the calls (logging
in, the transaction, UPDATE) because they all fail alike: a
:class:`~smtpcore.maildrop.MaildropError` is the store's own ``-ERR``, the
deadline passed is a WARNING with no traceback, anything else an ERROR and
``-ERR [SYS/TEMP]``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from smtpcore._driver._logtext import loggable
from smtpcore._driver._own_timeouts import DeadlinePassed, seconds_text
from smtpcore._driver._pop3_server_replies import TEMP_ERROR, SessionReplies
from smtpcore._driver._proxied import client_text
from smtpcore._errors import LocalProtocolError
from smtpcore.maildrop import MaildropError, MaildropInUse, MessageUnavailable
from smtpcore.pop3 import Err

logger = logging.getLogger("smtpcore.pop3.server")

_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]+")


T = TypeVar("T")


def _text(message: object) -> str:
    """An error message fit for a status line (UTF-8 text: a lone surrogate is
    replaced)."""
    text = str(message).encode("utf-8", "replace").decode("utf-8")
    return _CONTROL_RE.sub(" ", text).strip()[:200]


class StoreCalls(SessionReplies):
    """The mailstore's calls, under the store timeout, and the answers to their
    failures."""

    __slots__ = ()

    async def _store(self, call: Callable[[], Awaitable[T]]) -> T:
        """A mailstore call under the store timeout, which passed is
        :class:`DeadlinePassed`; the call's own ``TimeoutError`` (its database's, its
        socket's) is its failure, as any exception of its own is."""
        return await self.transport.within(self.options.timeouts.store, call())

    def _failure(
        self, exc: BaseException, call: str, *args: object, answer: Err = TEMP_ERROR
    ) -> Err:
        """The answer to a mailstore call that failed with ``exc`` (one
        :meth:`_call_failed` says is its own): a :class:`MaildropError`'s ``-ERR``,
        else ``answer``, with ``exc`` logged as the failure of ``call % args``. A
        :class:`MaildropError` the store has not logged itself is logged here (see
        :func:`_refusal_level`), so that every refusal leaves one line, and one only."""
        if isinstance(exc, MaildropError):
            if not exc.logged:
                level = _refusal_level(exc)
                logger.log(level, f"{call} refused: %s", *args, loggable(_text(exc)))
            return _maildrop_err(exc)
        if not self._timed_out(exc, call, *args):
            logger.error(f"{call} failed", *args, exc_info=exc)
        return answer

    def _timed_out(self, exc: BaseException, call: str, *args: object) -> bool:
        """Whether ``exc`` is the ``store`` timeout of ``call % args`` (the deadline's
        own, :class:`DeadlinePassed`), which is then logged as the expected event it
        is (a slow disk, a big maildrop): one WARNING naming the call, the session's
        client and the deadline, no traceback, as Dovecot logs a timeout. A
        ``TimeoutError`` the store raised itself is its failure, not this. The
        client's answer is the caller's, as for any failure."""
        if not isinstance(exc, DeadlinePassed):
            return False
        logger.warning(
            f"{call} from %s: store timeout, given up after %s",
            *args,
            client_text(self.session),
            seconds_text(exc.seconds),
        )
        return True


def _refusal_level(exc: MaildropError) -> int:
    """How loud a store's own refusal is logged: a maildrop another session holds, or a
    message gone since the listing, is the normal course of things (INFO); anything
    else, a store that cannot serve, is for the operator (WARNING)."""
    if isinstance(exc, MaildropInUse | MessageUnavailable):
        return logging.INFO
    return logging.WARNING


def _maildrop_err(exc: MaildropError) -> Err:
    """``-ERR`` with a :class:`MaildropError`'s message and response code. A code
    that is none (RFC 2449 §8: levels of printable characters but ``/`` and ``]``,
    joined by ``/``) is the store's mistake: logged, and left out."""
    text = _text(exc)
    try:
        return Err(text, code=exc.code)
    except LocalProtocolError:
        logger.error("%s: %r is not a response code (RFC 2449 §8)", type(exc).__name__, exc.code)
        return Err(text)
