"""SASL's AUTH in a POP3 server session (RFC 5034): the mechanisms offered, and each
step of an exchange.

:class:`SaslAuth` runs each step through the session's
:class:`~smtpcore.pop3.ServerAuth` (in a worker thread for an
``Authenticator(in_thread=True)``), and turns what it answers into the login,
the failed login or the refusal of
:mod:`~smtpcore._driver._pop3_server_login`, which USER/PASS and APOP share.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from inspect import isawaitable

from smtpcore._driver._pop3_server_login import AUTH_FAILED, Login
from smtpcore._handler_auth import _runs_in_thread
from smtpcore._words import ascii_upper
from smtpcore.maildrop import MechanismFactory
from smtpcore.pop3 import Auth, AuthAnswer, AuthResponse, Err, ServerAuth
from smtpcore.pop3._events import MECHANISM_NAME
from smtpcore.sasl import ChannelBindings, offered_mechanisms

logger = logging.getLogger("smtpcore.pop3.server")


class SessionAuth(ServerAuth):
    """One session's AUTH state (see :class:`~smtpcore.pop3.ServerAuth`), with what
    the session keeps beside it: ``in_thread``, whether the steps of the exchange
    under way run in a worker thread (its mechanism is an
    ``Authenticator(in_thread=True)``'s)."""

    def __init__(
        self,
        mechanisms: Mapping[str, MechanismFactory],
        channel_bindings: ChannelBindings | None = None,
    ) -> None:
        super().__init__(mechanisms, channel_bindings=channel_bindings)
        self.in_thread = False

    def fresh(self) -> SessionAuth:
        """A new AUTH state with the same mechanisms and channel bindings, for a session
        whose exchange was abandoned to a worker thread still running its step."""
        return SessionAuth(self.mechanisms, self.channel_bindings)


class SaslAuth(Login):
    """AUTH: the mechanisms a session offers, and the steps of an exchange."""

    __slots__ = ()

    async def _offered_mechanisms(self) -> dict[str, MechanismFactory]:
        """The store's mechanisms for this session, SCRAM-SHA-256-PLUS only where the
        TLS layer gives channel binding data (RFC 5802 §6, RFC 9266), which the
        exchange then hands to each mechanism.

        The store's hook may be a coroutine, as its other hooks are, awaited under
        the ``store`` timeout, or a plain method (a fixed table needs no wait)."""
        bindings = self._sasl.channel_bindings = self.transport.channel_bindings()
        if not self.state.sasl_login:
            return {}
        try:
            answer = self.store.sasl_mechanisms(self.session)
            offered = await self._store(lambda: answer) if isawaitable(answer) else answer
            by_name = {ascii_upper(name): factory for name, factory in offered.items()}
            for name in by_name:  # each goes on the CAPA SASL line (RFC 4422 §3.1)
                if not MECHANISM_NAME.fullmatch(name):
                    raise ValueError(f"not a SASL mechanism name: {name!r}")
            return {name: by_name[name] for name in offered_mechanisms(by_name, bindings)}
        except BaseException as exc:  # a result that is no mapping of names, too
            if not self._call_failed(exc):
                raise
            logger.exception("sasl_mechanisms failed: no SASL offered")
            return {}

    async def _auth(self, event: Auth) -> None:
        sasl = self._sasl
        sasl.in_thread = _runs_in_thread(sasl.mechanisms.get(event.mechanism))
        start = functools.partial(sasl.start, event)
        await self._sasl_step(start, event.mechanism, sasl.in_thread)

    async def _auth_response(self, event: AuthResponse) -> None:
        sasl = self._sasl
        step = functools.partial(sasl.step, event)
        # A cancel ("*") runs no mechanism code: answered in the loop.
        in_thread = sasl.in_thread and not event.cancel
        await self._sasl_step(step, sasl.mechanism, in_thread, cancel=event.cancel)

    async def _sasl_step(
        self,
        step: Callable[[], AuthAnswer],
        mechanism: str,
        in_thread: bool,
        *,
        cancel: bool = False,
    ) -> None:
        """Answer with a step of an AUTH exchange. What the store's mechanisms or
        their callables raise is the store's failure, answered as a store call's
        (``-ERR [SYS/TEMP]``, no failed login: no password was judged), and so is
        a cancellation that is not the session's (:meth:`_call_failed`); the next
        AUTH starts on a fresh exchange.

        With ``in_thread`` (an ``Authenticator(in_thread=True)``'s step) it runs in
        a worker thread, under the store timeout, as USER/PASS's login check is:
        the store's mechanisms check its credentials. Past it the exchange is left
        to its thread, which may still change it."""
        try:
            if in_thread:  # see Authenticator's in_thread
                answer = await self._store(lambda: self.transport.run_in_thread(step))
            else:
                answer = step()
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            self._sasl = self._sasl.fresh()
            self._answer(self._failure(exc, "SASL %s", mechanism))
            return
        await self._sasl_answer(answer, mechanism, cancel=cancel)

    async def _sasl_answer(self, answer: AuthAnswer, mechanism: str, *, cancel: bool) -> None:
        """Send what :class:`~smtpcore.pop3.ServerAuth` answered to a step of
        ``mechanism``, doing what it says the answer was: a login, a failed login, or
        a refusal that judged no credential (a mechanism this session cannot run, an
        initial response to a server-first one, which is a bad command too). A
        client's cancel (``*``) is none of these."""
        sasl = self._sasl
        success, failure = sasl.success, sasl.failure
        if failure is not None and failure.callback_error:
            # The application's mistake, never the client's failed login.
            logger.error("SASL %s failed: %s", sasl.mechanism, failure.reason)
        if success is not None:
            await self._login(success.authzid, sasl.mechanism)
        elif failure is not None and sasl.failed_login:
            await self._failed(
                "AUTH",
                failure.named,
                mechanism=sasl.mechanism,
                no_secret=failure.no_secret,
                answer=answer if isinstance(answer, Err) else AUTH_FAILED,
            )
        else:
            self._answer(answer)
            if sasl.bad_command:
                conn = self.conn
                assert conn is not None
                conn.count_bad_command()
            if isinstance(answer, Err) and not cancel and (failure is None or sasl.bad_command):
                self._no_credential_checked("AUTH", answer, mechanism)
