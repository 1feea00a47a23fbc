"""Logging in to a POP3 server session, the AUTHORIZATION state (RFC 1939 §4, §7):
USER and PASS, APOP, a failed login and its delay, the maildrop opened.

:class:`Login` asks the mailstore to judge each credential, opens and lists
the maildrop of a login that succeeds, and logs every failed login in the
line fail2ban's filter reads, after ``auth_failure_delay``, up to
``max_auth_failures``; a login command refused before any credential was
judged is answered at once and logged in a line of its own. SASL's AUTH
(:mod:`~smtpcore._driver._pop3_server_auth`) ends in the same login and the
same failures.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from smtpcore._driver._logtext import (
    NO_CLEAR_PASSWORD,
    loggable_reply,
    login_fields,
    named_mechanism,
    no_credential_line,
)
from smtpcore._driver._pop3_login_prep import prepared_apop_secret, prepared_name
from smtpcore._driver._pop3_server_replies import TEMP_ERROR
from smtpcore._driver._pop3_server_transaction import Transaction, checked_listing
from smtpcore._driver._pop3_server_update import Update
from smtpcore._driver._proxied import client_text
from smtpcore._plural import messages
from smtpcore.pop3 import Apop, BadCommand, Err, MessageNumbers, Ok, Pass, apop_matches

logger = logging.getLogger("smtpcore.pop3.server")

AUTH_FAILED: Final = Err("Authentication failed", code="AUTH")
"""A failed login's answer (RFC 3206 §4: ``[AUTH]``)."""

_LOGIN_COMMAND: Final = re.compile(rb"(USER|PASS|APOP|AUTH)(?=[ \r\n]|\Z)", re.IGNORECASE)
"""A login command's keyword, read as the machine reads it, up to the first space:
``AUTHX`` or ``USERS`` is an unknown command, not a login refused."""


def _shown(response: Ok | Err) -> str:
    """A response as its log line shows it: its status line, escaped."""
    return loggable_reply(response.to_bytes().decode("utf-8").rstrip("\r\n"))


class Login(Transaction, Update):
    """USER/PASS and APOP, failed logins, and the maildrop a login opens: its totals
    answer the login (:class:`Transaction`), and one that cannot be listed is
    closed again (:class:`Update`)."""

    __slots__ = ()

    async def _pass(self, event: Pass) -> None:
        """USER's name prepared (:mod:`._pop3_login_prep`) and this password as typed,
        judged by the store, which prepares the password as AUTH PLAIN's
        (:func:`~smtpcore.sasl.passwords_match`); a name that can log no one in fails
        as a wrong password does."""
        conn = self.conn
        assert conn is not None and conn.user is not None
        user = prepared_name(conn.user, utf8_user=conn.offers_utf8)
        if user is None:
            await self._failed("PASS", conn.user)
            return
        try:
            ok = await self._store(
                lambda: self.store.check_password(self.session, user, event.password)
            )
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            self._answer(self._failure(exc, "check_password"))
            return
        if ok is True:  # nothing else logs in: a wrong answer must fail closed
            await self._login(user, "USER")
        elif ok is False:
            await self._failed("PASS", user)
        else:
            self._wrong_verdict("check_password", ok, "a bool")

    async def _apop(self, event: Apop) -> None:
        """The APOP name prepared, and the digest checked over the store's secret as
        SASLprep stores it where ``UTF8 USER`` is listed, as stored where it is not
        (RFC 6856 §2.2, :mod:`._pop3_login_prep`)."""
        conn = self.conn
        assert conn is not None and conn.apop_timestamp is not None
        timestamp = conn.apop_timestamp
        utf8_user = conn.offers_utf8
        name = prepared_name(event.name, utf8_user=utf8_user)
        if name is None:
            await self._failed("APOP", event.name)
            return
        try:
            secret = await self._store(lambda: self.store.apop_secret(self.session, name))
            matches = isinstance(secret, str) and apop_matches(
                timestamp, prepared_apop_secret(secret, utf8_user=utf8_user), event.digest
            )
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            self._answer(self._failure(exc, "apop_secret"))
            return
        if matches:
            await self._login(name, "APOP")
        elif secret is None or isinstance(secret, str):
            await self._failed("APOP", name, no_secret=secret is None)
        else:
            self._wrong_verdict("apop_secret", secret, "a str or None")

    def _wrong_verdict(self, hook: str, verdict: object, expected: str) -> None:
        """A login hook answered with the wrong type (an ``async def`` helper's coroutine
        left unawaited, a forgotten ``return``): the store's mistake, not the client's
        failed login, so it is logged at ERROR and answered ``-ERR [SYS/TEMP]`` at once,
        with no failure delay, no count and no line for fail2ban, as a SASL callback's
        is (:attr:`smtpcore.sasl.Failure.callback_error`)."""
        logger.error("%s gave %s, not %s", hook, type(verdict).__name__, expected)
        self._answer(TEMP_ERROR)

    async def _failed(
        self,
        command: str,
        named: str | None,
        *,
        mechanism: str | None = None,
        no_secret: bool = False,
        answer: Err = AUTH_FAILED,
    ) -> None:
        """A failed login: ``answer`` (``-ERR [AUTH]``, or the machine's ``-ERR`` to a
        line that ended an exchange whose mechanism had refused the credentials; at
        ``max_auth_failures`` the closing one) after ``auth_failure_delay`` seconds,
        which this session alone waits, and logged in the line fail2ban's filter
        reads, with the AUTH ``mechanism``, and the user the client ``named`` only when the
        store's :meth:`~smtpcore.maildrop.Mailstore.is_user` knows it (a password
        typed as a name is not logged). A known user the store had no secret for
        (APOP or CRAM-MD5 and SCRAM keys: ``no_secret``) could not have logged in:
        answered alike, but logged as not possible in place of ``reject:``, so that
        a client trying each way in turn is not banned for it."""
        user = await self._known_user(named)
        delay = self.options.auth_failure_delay
        if delay:
            await self.transport.sleep(delay)
        self._failures += 1
        if self._failures >= self.options.max_auth_failures:
            answer = Err("Authentication failed, too many attempts", code="AUTH")
            self._closing = True
        self._answer(answer)
        peer = client_text(self.session)
        fields = login_fields(user, mechanism)
        answered = answer.to_bytes().decode("utf-8").rstrip("\r\n")
        if no_secret and user:
            logger.info(
                "pop3: %s from %s: %s; %s; %s", command, peer, answered, NO_CLEAR_PASSWORD, fields
            )
        else:
            logger.info("pop3: reject: %s from %s: %s; %s", command, peer, answered, fields)

    async def _known_user(self, name: str | None) -> str | None:
        """``name`` when the store's ``is_user`` says it names a user, else None (no
        name, or a call that failed, which is logged)."""
        if not name:
            return None
        try:
            known = await self._store(lambda: self.store.is_user(self.session, name))
        except BaseException as exc:
            if not self._call_failed(exc):
                raise
            logger.error("is_user failed", exc_info=exc)
            return None
        return name if known is True else None

    async def _login(self, user: str, mechanism: str) -> None:
        """Open and lock the maildrop; then the session is in TRANSACTION (RFC 1939 §4)."""
        session = self.session
        session.mechanism = mechanism  # the credentials were right: the store may read it
        try:
            maildrop = await self._store(lambda: self.store.open_maildrop(session, user))
        except BaseException as exc:
            session.mechanism = None
            if not self._call_failed(exc):
                raise
            self._answer(self._failure(exc, "open_maildrop(%r)", user))
            return
        self.maildrop = maildrop
        try:
            listing = checked_listing(await self._store(maildrop.messages))
        except BaseException as exc:
            if not self._call_failed(exc):
                session.mechanism = None
                raise
            await self._release()
            session.mechanism = None
            self._answer(self._failure(exc, "listing the maildrop of %r", user))
            return
        self.listing = listing
        self.numbers = MessageNumbers(len(listing))
        session.user = user
        count, size = self._totals()
        if not self._answer(Ok(f"Logged in, {messages(count)} ({size} octets)")):
            await self._release()

    async def _bad_command(self, event: BadCommand) -> None:
        """A line the machine refused. An unreadable answer to a ``+`` challenge ends
        the SASL exchange (RFC 5034 §4); after the mechanism had refused the
        credentials (a token's error challenge, RFC 7628 §3.2.2) that is the failed
        login the refusal already was, whatever ended it: the machine's ``-ERR``,
        after ``auth_failure_delay``, logged and counted as a failed login is. Any
        other refusal of a line of the exchange, or of a login command (USER, PASS,
        APOP, AUTH: before STLS where TLS is required, an unknown mechanism, a
        syntax error), judged no credential: answered at once and logged as such
        (:meth:`_no_credential_checked`)."""
        sasl = self._sasl
        answering = sasl.exchange_under_way
        refusal = sasl.abandon()
        if refusal is not None:
            await self._failed(
                "AUTH",
                refusal.named,
                mechanism=sasl.mechanism,
                no_secret=refusal.no_secret,
                answer=event.response,
            )
            return
        self._answer(event.response)
        login = _LOGIN_COMMAND.match(event.line)
        if answering:
            self._no_credential_checked("AUTH", event.response, sasl.mechanism)
        elif login is not None:
            command = login.group().decode("ascii").upper()
            named = named_mechanism(event.line, sasl.mechanisms) if command == "AUTH" else None
            self._no_credential_checked(command, event.response, named)

    def _no_credential_checked(self, command: str, answer: Err, mechanism: str | None) -> None:
        """A login ``command`` refused with ``answer`` before any credential was judged:
        no failed login, so answered at once, with no ``auth_failure_delay``, and
        logged in the line SMTP's server writes for such an AUTH, which fail2ban's
        filter does not read, with ``mechanism=`` when the server knows which."""
        peer = client_text(self.session)
        logger.info("%s", no_credential_line("pop3", command, peer, _shown(answer), mechanism))
