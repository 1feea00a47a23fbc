"""How an SMTP server session asks its handler: the hook, its deadline, its failure.

Every command the handler answers goes through :class:`HandlerHooks`: a hook the
handler left as :class:`~smtpcore.handler.Handler` has it is answered without a
call, a hook that answers at once costs no coroutine, one that waits is awaited
under the ``command`` timeout, and one that fails is logged and answered with
the reply its failure earns. One place, so that every hook keeps those rules.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from smtpcore._driver._failures import LOCAL_ERROR, failure_reply, fault_text, no_room
from smtpcore._driver._smtp_server_refusals import RefusalLog
from smtpcore.handler import Handler
from smtpcore.smtp import Event, Reply

if TYPE_CHECKING:
    from typing_extensions import Self


logger = logging.getLogger("smtpcore.server")


HANDLER: Final = Handler()
"""Handler's own hooks: they answer for a hook a handler leaves as it is or answers None
to, so that the defaults live in :class:`~smtpcore.handler.Handler` alone."""


_TRANSACTION_HOOKS: Final[Mapping[str, str]] = {
    "handle_mail": "MAIL",
    "handle_rcpt": "RCPT",
    "handle_data": "DATA",
    "handle_data_chunk": "DATA",
    "handle_message": "DATA",
}
"""The hooks of a mail transaction, whose replies RFC 5321 §4.2.2 gives 452 (MAIL,
RCPT, DATA and the end of the content) and 552 (the content) among, and the command
each answers in the reject log (the content is ``DATA``'s, as the reference server's
refusals of a message name it)."""


class HandlerHooks(RefusalLog):
    """Asking the handler's hooks, and answering for those it leaves as they are."""

    __slots__ = ()

    async def _ask(
        self,
        hook: str,
        args: tuple[Any, ...],
        seconds: float | None,
        *,
        failed: Reply | None = None,
    ) -> Reply:
        """What the handler's ``hook`` answers, called with ``args``, within ``seconds``.

        ``None`` stands for what :class:`~smtpcore.handler.Handler`'s own hook
        answers, and an exception for ``failed``, or else the reply the exception
        earns (:meth:`_hook_failed`). The hook is named and its
        arguments given, rather than a function calling it: a hook of every
        message makes no closure (a function and a cell per argument).
        """
        reply = None
        if hook in self.state.overridden:
            try:
                call = getattr(self.state.handler, hook)(*args)
                reply = await self.transport.within(seconds, call)
            except BaseException as exc:
                if not self._call_failed(exc):
                    raise
                earned = self._hook_failed(hook, exc)
                return earned if failed is None else failed
        if reply is None:
            reply = self.state.fixed_answers.get(hook)  # Handler's, without calling it
            if reply is None:
                reply = await getattr(HANDLER, hook)(*args)
                assert reply is not None, f"Handler.{hook} answers"
        return reply

    def _hook_failed(self, hook: str, exc: BaseException, event: Event | None = None) -> Reply:
        """Log the handler's ``hook`` that raised ``exc`` (called in its ``except``)
        answering ``event``, and give the reply it earns. In a mail transaction
        :func:`failure_reply` tells a write that found no room (``452 4.3.1``, ``552
        5.3.4``) from any other fault (``451 4.3.0``), before the content as after it,
        since RFC 5321 §4.2.2 452 is a reply to MAIL, RCPT and DATA alike. Any other
        hook (EHLO, AUTH, VRFY, EXPN) gets ``451 4.3.0``: "message too big" or "storage
        full" answers no such command.

        A write that found no room (:func:`no_room`) is the expected state of a full
        disk, not a fault: one ``reject:`` line, with the write's reason and no
        traceback (:meth:`_refused_by_failure`). Any other failure in a transaction is
        refused too, and gets that line, every refusal having one, then its traceback."""
        verb = _TRANSACTION_HOOKS.get(hook)
        if verb is None:
            logger.exception("%s failed", hook)
            return LOCAL_ERROR
        why = no_room(exc)
        reply = failure_reply(exc)
        detail = why if why is not None else f"{hook} failed: {fault_text(exc)}"
        self._refused_by_failure(verb, event, reply, detail)
        if why is None:
            logger.exception("%s failed", hook)
        return reply

    async def _call(self, hook: str, args: tuple[Any, ...]) -> None:
        """Tell the handler's ``hook``, called with ``args``, within the ``command``
        timeout as every hook: one that runs past it is logged as failed, and the
        session goes on (docs/adapters.rst). A hook that waits has the replies
        already due written first: a client is not kept waiting for its RSET's 250
        while the handler tidies up."""
        if hook not in self.state.overridden:
            await getattr(HANDLER, hook)(*args)
            return
        try:
            started = self.transport.start_within(
                self.options.timeouts.command, getattr(self.state.handler, hook)(*args)
            )
            if not isinstance(started, tuple):
                self._write_due_now()
                await started
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            logger.exception("%s failed", hook)

    def _asked(
        self,
        answer: Callable[[Self, Any, Reply], object],
        event: Event,
        hook: str,
        args: tuple[Any, ...],
    ) -> tuple[Reply] | Awaitable[None]:
        """The reply of the handler's ``hook``, called with ``args``, as :meth:`_ask`
        answers: ``(reply,)`` when it comes at once, else what the session awaits to
        answer ``event`` with it (``answer(self, event, reply)``, see
        :meth:`~smtpcore._driver._smtp_server_transaction.Transaction._mail`).

        The hook is started here (:meth:`LinkBase.start_within
        <smtpcore._driver._transport.LinkBase.start_within>`): most hooks answer
        without waiting for anything, and then their command costs no coroutine.
        """
        state = self.state
        if hook in state.overridden:
            try:
                started = self.transport.start_within(
                    self.options.timeouts.command, getattr(state.handler, hook)(*args)
                )
            except BaseException as exc:
                if not self._call_failed(exc):
                    raise
                return (self._hook_failed(hook, exc, event),)
            if not isinstance(started, tuple):  # the hook waits: the rest is awaited
                return self._answer_when_done(answer, event, hook, args, started)
            if started[0] is not None:
                return started
        reply = state.fixed_answers.get(hook)  # Handler's, without calling it
        if reply is None:
            return self._answer_when_done(answer, event, hook, args, None)
        return (reply,)

    async def _answer_when_done(
        self,
        answer: Callable[[Self, Any, Reply], object],
        event: Event,
        hook: str,
        args: tuple[Any, ...],
        rest: Awaitable[Reply | None] | None,
    ) -> None:
        """What :meth:`_asked` awaits: the ``rest`` of the handler's ``hook``, or else
        Handler's own (``rest`` None), as :meth:`_ask` does."""
        reply = None
        if rest is not None:
            try:
                reply = await rest
            except BaseException as exc:
                if not self._call_failed(exc):
                    raise
                reply = self._hook_failed(hook, exc, event)
        if reply is None:
            reply = self.state.fixed_answers.get(hook)
            if reply is None:
                reply = await getattr(HANDLER, hook)(*args)
                assert reply is not None, f"Handler.{hook} answers"
        answer(self, event, reply)
