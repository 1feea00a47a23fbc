"""SMTP AUTH in a server session (RFC 4954): the exchange, its failures and their log.

:class:`Authentication` runs each step of an exchange through the session's
:class:`~smtpcore.smtp.ServerAuth` (in a worker thread for an
``Authenticator(in_thread=True)``), lets the handler veto a success, and
logs every outcome in the lines fail2ban's filter reads or, for a refusal
that judged no credential, in none: a failed login waits
``auth_failure_delay`` before its reply and counts toward
``max_auth_failures``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Final

from smtpcore._driver._failures import LOCAL_ERROR
from smtpcore._driver._logtext import (
    NO_CLEAR_PASSWORD,
    loggable,
    loggable_reply,
    login_fields,
    no_credential_line,
)
from smtpcore._driver._proxied import client_text
from smtpcore._driver._smtp_server_hooks import HandlerHooks
from smtpcore._handler_auth import _runs_in_thread
from smtpcore._words import ascii_upper
from smtpcore.handler import Authenticator, AuthIdentity, MechanismFactory
from smtpcore.sasl import ChannelBindings, Failure, offered_mechanisms
from smtpcore.smtp import Auth, AuthResponse, Reply, ServerAuth, State

logger = logging.getLogger("smtpcore.server")


_OVER: Final = frozenset({State.ERROR, State.CLOSED})
"""A session over: its machine counts nothing more."""


_AUTH_UNAVAILABLE: Final = Reply(454, "Temporary authentication failure", "4.7.0")


class _SessionAuth(ServerAuth):
    """One session's AUTH state (see :class:`~smtpcore.smtp.ServerAuth`), with what
    the session keeps beside it: ``names``, every mechanism its machine was built
    with (``-PLUS`` ones are offered only over a TLS layer that gives channel
    binding data, see :meth:`Authentication._offer_auth`), and ``mechanism``, the
    one of the exchange under way. Here rather than in two slots of every
    session: a session that offers no mechanism shares :data:`NO_AUTH`."""

    def __init__(
        self,
        names: Sequence[str],
        mechanisms: Mapping[str, MechanismFactory],
        channel_bindings: ChannelBindings | None = None,
    ) -> None:
        super().__init__(mechanisms, channel_bindings=channel_bindings)
        self.names = names
        self.mechanism = ""
        self.in_thread = False
        """Whether the steps of the exchange under way run in a worker thread (its
        mechanism is an ``Authenticator(in_thread=True)``'s)."""

    def fresh(self) -> _SessionAuth:
        """A new AUTH state with the same mechanisms and channel bindings, for a session
        whose exchange was abandoned to a worker thread still running its step."""
        return _SessionAuth(self.names, self.mechanisms, self.channel_bindings)


NO_AUTH: Final = _SessionAuth((), {})
"""The AUTH state of a session that offers no mechanism: its machine refuses every
AUTH (504) before the session sees one, and it keeps nothing, so every such session
shares it."""


class Authentication(HandlerHooks):
    """The AUTH exchanges of the session, and the mechanisms it offers."""

    __slots__ = ()

    _auth: _SessionAuth

    def _offer_auth(self, names: Sequence[str]) -> None:
        """A fresh AUTH state for this connection's channel, of a machine built with the
        mechanisms ``names``: SCRAM-SHA-256-PLUS is offered, and its binding checked,
        only with the TLS layer's channel binding data (RFC 5802 §6, RFC 9266);
        nothing learnt before a handshake stands. An Authenticator's
        :meth:`~smtpcore.handler.Authenticator.withheld` mechanisms, which no user
        could use now, are not offered."""
        bindings = self.transport.channel_bindings()
        auth = self.options.auth
        withheld = auth.withheld() if isinstance(auth, Authenticator) else frozenset()
        offered = offered_mechanisms([n for n in names if n not in withheld], bindings)
        self.conn.auth_mechanisms = tuple(offered)
        self._auth = _SessionAuth(names, self.options.auth_mechanisms, bindings)

    async def _authenticate(self, event: Auth | AuthResponse) -> None:
        """One step of an AUTH exchange (RFC 4954 §4); the handler may veto a success.

        A step that raises (the mechanism or the application's callables), lets
        out a cancellation that is not the session's (:meth:`_call_failed`), or
        whose callback broke its contract (a ``check_password`` that gave no bool)
        is the application's failure: logged, and answered ``454 4.7.0`` (RFC 4954
        §6), which counts no failed attempt: no password was judged."""
        flow = self._auth
        if isinstance(event, Auth):
            flow.mechanism = ascii_upper(event.mechanism)
            flow.in_thread = _runs_in_thread(flow.mechanisms.get(flow.mechanism))
        step = (
            functools.partial(flow.start, event)
            if isinstance(event, Auth)
            else functools.partial(flow.step, event)
        )
        # A cancel ("*") is answered 501 by the flow, with no mechanism code run: in
        # the loop, so that no deadline turns it into a 454 the machine refuses
        # (RFC 4954 §4).
        cancel = isinstance(event, AuthResponse) and event.cancel
        try:
            if flow.in_thread and not cancel:
                # Under the deadline of the handler's hooks; past it the exchange
                # is its thread's, which may still change it: a fresh one follows.
                reply = await self.transport.within(
                    self.options.timeouts.command, self.transport.run_in_thread(step)
                )
            else:
                reply = step()
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            logger.exception("AUTH %s failed", flow.mechanism)
            if flow.in_thread:
                self._auth = flow.fresh()
            reply = _AUTH_UNAVAILABLE
        else:
            failure = flow.failure
            if failure is not None and failure.callback_error:  # answered 454 already
                logger.error("AUTH %s failed: %s", flow.mechanism, failure.reason)
        if cancel and flow.failure is None:  # no credential judged: see ServerAuth.step
            self._auth_cancelled(self._answer(reply), flow.mechanism)
            return
        session = self.session
        success = flow.success
        if reply.code != 235 or success is None:
            answered = self._answer(reply)
            if flow.failed_login:
                await self._auth_failed(answered, flow.mechanism, flow.failure)
            elif answered.code >= 500:
                self._no_credential_checked(answered, flow.mechanism)
            return
        flow.success = None
        identity = AuthIdentity(success.authcid, success.authzid, flow.mechanism)
        reply = await self._ask(
            "handle_auth",
            (session, identity),
            self.options.timeouts.command,
        )
        if reply.code != 235 and reply.code < 400:
            # The exchange is over: a 334 would have the client's next command read
            # as its answer (RFC 4954 §4), and the machine cannot tell.
            logger.error("handle_auth's reply %s is not legal here: 235, 4xx or 5xx", reply)
            reply = LOCAL_ERROR
        answered = self._answer(reply)
        if answered.code == 235:
            session.authenticated = identity
            logger.info(
                "AUTH %s from %s as %s",
                identity.mechanism,
                client_text(session),
                loggable(str(identity)),
            )
        else:  # the handler's veto counts as a failed attempt: logged as one
            await self._auth_failed(answered, flow.mechanism, None, proven=identity.authcid)

    def _auth_cancelled(self, reply: Reply, mechanism: str | None) -> None:
        """An exchange the client cancelled with ``*``, answered with ``reply`` (501):
        no failed authentication (RFC 4954 §4), for no password was judged. Answered
        at once, with no ``auth_failure_delay``, and logged at INFO in no line
        fail2ban's filter reads: a client that gives up is not banned for it. A ``*``
        after the mechanism refused the credentials (a token's error challenge, RFC
        7628 §3.2.2) is no such cancel: its 501 is a failed AUTH (``_auth_failed``)."""
        logger.info(
            "AUTH %s from %s: cancelled by the client: %s",
            mechanism,
            client_text(self.session),
            loggable_reply(reply),
        )

    def _no_credential_checked(self, reply: Reply, mechanism: str | None) -> None:
        """The line of an AUTH refused before any credential was judged (RFC 4954 §6),
        answered with ``reply``: by the machine (PLAIN before STARTTLS, an unknown
        mechanism, a syntax error, an answer to a 334 that is not base64 or too
        long) or by the mechanism (an initial response to a server-first mechanism,
        ``501 5.7.0``, RFC 4954 §4; a ``-PLUS`` mechanism without channel binding
        data, ``504``). No failed login: answered at once, with no
        ``auth_failure_delay``, and logged in no line fail2ban's filter reads, with
        ``mechanism=`` when the server knows which (never a word it does not: it
        may be a password)."""
        line = no_credential_line(
            "NOQUEUE", "AUTH", client_text(self.session), loggable_reply(reply), mechanism
        )
        logger.info("%s", line)

    async def _auth_failed(
        self,
        reply: Reply,
        mechanism: str | None,
        failure: Failure | None,
        *,
        proven: str | None = None,
    ) -> None:
        """A failed AUTH, answered with ``reply``: the mechanism refused the
        credentials (:attr:`ServerAuth.failed_login
        <smtpcore.smtp.ServerAuth.failed_login>`) or the handler vetoed the
        identity they proved (``proven``), whatever the veto's code. A 5xx is
        logged at INFO, in the line fail2ban's filter reads, and the reply held back
        ``auth_failure_delay`` seconds; a 4xx is neither (a veto's temporary failure, or
        the ``421`` of a session the machine closed for too many errors). The line
        names the user the ``failure`` named only when the
        Authenticator's ``is_user`` knows it (a password typed as a name is not
        logged), or the one a handler vetoed (``proven``). A known user whom the
        mechanism had no secret for (CRAM-MD5 and SCRAM keys) could not have
        succeeded: the client is answered alike, but the line says so in place of
        ``reject:``, so that a client trying mechanisms in turn is not banned.
        A 5xx counts toward ``max_auth_failures`` here, once, whatever its code
        (:meth:`ServerConnection.count_auth_failure
        <smtpcore.smtp.ServerConnection.count_auth_failure>`): a veto worded ``538``
        judged a credential as a ``535`` did. The replies due go out at the
        session's next wait for its client, so the session waits here, alone,
        before it gets there."""
        if reply.code >= 500:
            if self.conn.state not in _OVER:
                self.conn.count_auth_failure()
            user = proven
            if user is None and failure is not None:
                user = await self._known_user(failure.named)
            fields = login_fields(user, mechanism)
            peer = client_text(self.session)
            if proven is None and user and failure is not None and failure.no_secret:
                logger.info(
                    "NOQUEUE: AUTH from %s: %s; %s; %s",
                    peer,
                    loggable_reply(reply),
                    NO_CLEAR_PASSWORD,
                    fields,
                )
            else:
                logger.info(
                    "NOQUEUE: reject: AUTH from %s: %s; %s", peer, loggable_reply(reply), fields
                )
            delay = self.options.auth_failure_delay
            if delay:
                await self.transport.sleep(delay)

    async def _known_user(self, name: str | None) -> str | None:
        """``name`` when the Authenticator's ``is_user`` says it names a user, else None
        (no name, no ``is_user``, or one that failed, which is logged). Run as the
        exchange's steps are: in a worker thread, under the command deadline, with
        ``in_thread``."""
        auth = self.options.auth
        if not name or not isinstance(auth, Authenticator) or auth.is_user is None:
            return None
        is_user = auth.is_user
        try:
            if auth.in_thread:
                known = await self.transport.within(
                    self.options.timeouts.command,
                    self.transport.run_in_thread(lambda: is_user(name)),
                )
            else:
                known = is_user(name)
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            logger.exception("is_user failed")
            return None
        return name if known is True else None
