"""The commands of an SMTP server session outside a transaction and AUTH: EHLO,
STARTTLS, the everyday ones, and the lines the machine refused.

:class:`Commands` answers HELO, EHLO and LHLO (a new hello ends the
transaction), STARTTLS (RFC 3207: nothing learnt before the handshake
stands), NOOP, QUIT, VRFY, EXPN and HELP, a command only a custom machine
knows, and a :class:`~smtpcore.smtp.BadCommand`, which may be a line of AUTH.
"""

from __future__ import annotations

import functools
import logging

from smtpcore._driver._connection_lost import ConnectionLost
from smtpcore._driver._logtext import loggable_reply, named_mechanism
from smtpcore._driver._proxied import client_text
from smtpcore._driver._smtp_server_auth import Authentication
from smtpcore._driver._smtp_server_refusals import (
    AUTH_COMMAND,
    judged_no_credential,
    logged_verb,
    refusal_kind,
)
from smtpcore._driver._smtp_server_replies import OK
from smtpcore._driver._smtp_server_transaction import Transaction
from smtpcore.smtp import (
    BadCommand,
    Command,
    Ehlo,
    Event,
    Expn,
    Helo,
    Help,
    Lhlo,
    Noop,
    Quit,
    Reply,
    StartTls,
    Vrfy,
)

logger = logging.getLogger("smtpcore.server")


class Commands(Authentication, Transaction):
    """The commands that are neither the transaction's nor AUTH's."""

    __slots__ = ()

    def _unanswered(self, event: Event) -> None:
        """Answer an event ``_ANSWERS`` has no method for: a command a custom machine
        (``connection_factory``) knows, say."""
        if isinstance(event, Command):
            self._answer(Reply(502, "Command not implemented", "5.5.1"))
            return
        raise RuntimeError(f"unexpected event {event!r}")  # pragma: no cover

    async def _bad_command(self, event: BadCommand) -> None:
        """A line the machine refused. One that may carry a credential goes to
        :meth:`ServerAuth.answer <smtpcore.smtp.ServerAuth.answer>`, which ends the
        exchange it ended (an answer to a 334 that is not base64, or too long) and,
        after the mechanism had refused the credentials (a token's error challenge,
        RFC 7628 §3.2.2), counts the failed authentication the refusal already was
        toward ``max_auth_failures``: the machine's reply, held back and logged as a
        failed AUTH is. Any other refusal of an answer to a 334, or of an ``AUTH``
        command, judged no credential: answered at once and logged as such
        (:meth:`_no_credential_checked`). A line that only starts as AUTH
        (``AUTHX``) is an unknown command, refused as any other is."""
        if event.secret:
            flow = self._auth
            answering = flow.exchange_under_way
            reply = flow.answer(self.conn, event)
            if flow.failed_login:
                await self._auth_failed(self._answer(reply), flow.mechanism, flow.failure)
                return
            if judged_no_credential(reply) and (
                answering or AUTH_COMMAND.match(event.line) is not None
            ):
                mechanism = (
                    flow.mechanism if answering else named_mechanism(event.line, flow.names)
                )
                self._no_credential_checked(self._answer(reply), mechanism)
                await self._follow_the_machine_out_of_a_transaction()
                return
        logger.info(
            "NOQUEUE: %s: %s from %s: %s",
            refusal_kind(event.reply),
            logged_verb(event),
            client_text(self.session),
            loggable_reply(event.reply),
        )
        self._answer(event.reply)
        await self._follow_the_machine_out_of_a_transaction()

    async def _hello(self, command: Ehlo | Helo | Lhlo) -> None:
        session = self.session
        reply = (
            session.hostname is self.options.hostname  # see ServerState.unasked
            and self.state.unasked.get("handle_hello")
        ) or await self._ask(
            "handle_hello",
            (session, command),
            self.options.timeouts.command,
        )
        if self._answer(reply).code // 100 == 2:  # accepted (is_positive, without a call)
            if session.envelope is not None:
                await self._end_transaction()
            session.helo_name = command.domain
            session.extended = not isinstance(command, Helo)

    def _noop(self, command: Noop) -> None:
        self._answer(OK)

    def _quit(self, command: Quit) -> None:
        self._answer(self.state.bye)

    async def _vrfy(self, command: Vrfy) -> None:
        session = self.session
        reply = await self._ask(
            "handle_vrfy",
            (session, command.argument),
            self.options.timeouts.command,
        )
        self._answer(reply)

    async def _expn(self, command: Expn) -> None:
        session = self.session
        reply = await self._ask(
            "handle_expn",
            (session, command.argument),
            self.options.timeouts.command,
        )
        self._answer(reply)

    async def _help(self, command: Help) -> None:
        """RFC 5321 §4.1.1.8: the commands this session knows now, extensions' included."""
        self._answer(Reply(214, f"Commands: {' '.join(self.conn.commands())}"))

    async def _starttls(self, command: StartTls) -> None:
        if self.options.ssl_context is None:  # a machine offering what the server cannot
            self._answer(Reply(454, "TLS not available", "4.7.0"))  # RFC 3207 §4
            return
        self._answer(Reply(220, "Ready to start TLS"))
        try:
            rest = self._flush()
            if rest is not None:
                await rest
        except TimeoutError:
            raise ConnectionLost from None
        await self._handshake()
        self.conn.tls_started()
        self.session.helo_name = None
        self.session.extended = False
        # RFC 3207 §4.2: nothing learnt before TLS stands, the identity included.
        self.conn.authenticated = False
        self.session.authenticated = None
        self.session.xclient = self.conn.forwarded_client  # its HELO and LOGIN gone too

    async def _handshake(self) -> None:
        context = self.options.ssl_context
        assert context is not None
        await self._shake_hands(
            functools.partial(self.transport.start_tls, context, server_side=True),
            self.options.timeouts.tls_handshake,
        )
        self.session.tls = self.transport.tls
        names = self._auth.names
        if names or self.options.auth_mechanisms:
            self._offer_auth(names)
