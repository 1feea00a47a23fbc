"""Opening a session with one exchanger under the message's TLS policy: the client
built, STARTTLS required, tried or left (RFC 3207, RFC 7435 §3), REQUIRETLS asked
for (RFC 8689 §4.2.1), and a failure to connect turned into a :class:`TryNext`.
Apart from what the session sends, which :mod:`smtpcore.server.exchanger` keeps."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Protocol, TypeVar

from smtpcore._driver import (
    BaseSMTPClient,
    HelloRefused,
    SMTPError,
    SMTPReplyError,
    Timeouts,
    TLSNotAvailable,
)
from smtpcore._driver._logtext import describe_error
from smtpcore.asyncio import SMTPClient
from smtpcore.routing import Attempt
from smtpcore.server._exchanger_outcomes import TryNext
from smtpcore.server._exchanger_replies import (
    kept_text,
    reply_dsn,
    reply_text,
    while_sending_end_of_data,
)
from smtpcore.server.log import loggable, logger
from smtpcore.server.relay_tls import MessageTLS, RelayTLS, relay_tls_context
from smtpcore.server.relaycache import RelayConnections
from smtpcore.smtp import Reply

__all__ = ["ClientFactory", "_ExchangerConnector", "_lacking", "default_client"]


class ClientFactory(Protocol):
    """Builds the SMTP client for one connection (the demo passes one that narrates)."""

    def __call__(
        self,
        host: str,
        port: int,
        *,
        hostname: str,
        starttls: bool | None,
        ssl_context: ssl.SSLContext,
        server_hostname: str,
        timeouts: Timeouts,
    ) -> BaseSMTPClient: ...


def default_client(
    host: str,
    port: int,
    *,
    hostname: str,
    starttls: bool | None,
    ssl_context: ssl.SSLContext,
    server_hostname: str,
    timeouts: Timeouts,
) -> BaseSMTPClient:
    return SMTPClient(
        host,
        port,
        hostname=hostname,
        starttls=starttls,
        ssl_context=ssl_context,
        server_hostname=server_hostname,
        timeouts=timeouts,
    )


def _tls_name(attempt: Attempt) -> str:
    """The name a certificate is checked against: the exchanger's host name, or for an
    address literal the address itself, which a certificate names by its IP (and no
    SNI is sent for it, RFC 6066 §3)."""
    if attempt.host.startswith("["):
        return str(attempt.address)
    return attempt.host


def _tls_reason(exc: SMTPError) -> str:
    """Why STARTTLS failed, cut to :func:`kept_text` (an error's text may quote a reply)."""
    if isinstance(exc, SMTPReplyError):
        return kept_text(f"STARTTLS refused: {reply_text(exc.reply)}")
    reason = describe_error(exc.__cause__) if exc.__cause__ is not None else str(exc)
    return kept_text(f"TLS handshake failed: {reason}")


def _refused_for_good(exc: SMTPError) -> bool:
    """Whether ``exc``, which ended a session before any mail was sent, is a permanent
    refusal: a 5xx to the HELO the client falls back to after any refusal of EHLO but
    421 (RFC 5321 §4.2.1: the command SHOULD NOT be repeated), which Postfix's
    ``smtp_helo()`` bounces at once, or a 5xx to EHLO followed by a close, the
    exchanger's last word (a blocklist's 554, say); a 4xx to either waits. A 5xx
    greeting is not: Postfix takes it as 4xx by default (``smtp_skip_5xx_greeting``,
    :func:`_greeting_status`), and so does this relay. The relay does not
    authenticate, so no AUTH reply comes here."""
    return (
        isinstance(exc, HelloRefused) and exc.command != "greeting" and 500 <= exc.reply.code < 600
    )


def _greeting_status(exc: SMTPError) -> str | None:
    """The status a 5xx greeting defers with: the server's own, its class made 4, as
    Postfix's ``smtp_skip_5xx_greeting`` does, since it is not the permanent failure
    its class says (RFC 3464 §2.3.4); None for every other failure."""
    if isinstance(exc, HelloRefused) and exc.command == "greeting" and exc.reply.code >= 500:
        return "4" + reply_dsn(exc.reply)[1:]
    return None


_Lacking = TypeVar("_Lacking", Reply, TryNext)


def _lacking(client: BaseSMTPClient, relay: str, refusal: _Lacking) -> _Lacking:
    """Every refusal of mail for what this session does not offer (TLS, REQUIRETLS,
    SMTPUTF8, 8BITMIME, BINARYMIME, CHUNKING) goes through here: ``refusal``, what an
    exchanger that offers no more gets (a reply the recipients bounce with, or a
    :class:`TryNext` for TLS and REQUIRETLS, which another exchanger may offer).
    But where the session went on after HELO because EHLO got a ``4xx``, it lacks them
    only for now: the exchanger may offer them next time, so :class:`TryNext` with the
    EHLO reply is raised and the mail waits, as when that ``4xx`` ended the session.
    After a ``5xx`` to EHLO what the HELO session lacks is what the exchanger offers,
    and ``refusal`` stands (RFC 8689 §5: REQUIRETLS's 5.7.30; RFC 6531 §3.4:
    SMTPUTF8's 5.6.7; RFC 6152 §3 and RFC 3030 §3: 5.6.3).

    Its three callers: TLS not offered, REQUIRETLS not offered, and
    :class:`~smtpcore.asyncio.ExtensionNotOffered` for the message, the client's or
    :func:`~smtpcore.server._exchanger_content._carried`'s, where a new check of what
    the message needs belongs."""
    ehlo = _ehlo_refused_for_now(client)
    if ehlo is not None:
        detail = kept_text(f"host {relay} refused EHLO: {reply_text(ehlo)}")
        raise TryNext(detail, reply=ehlo, unreachable=True)
    return refusal


def _ehlo_refused_for_now(client: BaseSMTPClient) -> Reply | None:
    """The ``4xx`` that refused ``client``'s EHLO, where its session went on after HELO
    (in plaintext, or the EHLO after TLS): what the session lacks, the exchanger may
    offer next time. None where EHLO was taken, or refused with a ``5xx``, after which
    what HELO offers is what the exchanger offers. One test for the two decisions that
    hang on it: :func:`_lacking` and :func:`_lacking_for_now`."""
    ehlo = client.ehlo_refused
    return ehlo if ehlo is not None and ehlo.code < 500 else None


def _lacking_for_now(client: BaseSMTPClient) -> bool:
    """Whether ``client``'s session, as ``connect`` left it, lacks for now what a new
    connection to the exchanger may have: TLS, its STARTTLS refused (any reply but
    ``220``: the session went on in plaintext, RFC 3207 §4), or the EHLO extensions
    (:func:`_ehlo_refused_for_now`), STARTTLS among them in plaintext. Under TLS
    ``starttls_refused`` is None: STARTTLS was taken."""
    return client.starttls_refused is not None or _ehlo_refused_for_now(client) is not None


class _TLSFailed(Exception):
    """STARTTLS was refused (where TLS is required, or to a client that will log in)
    or its handshake failed; ``may`` goes on in plaintext over a new connection."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _tls_failure(exc: SMTPError) -> bool:
    """Whether ``exc`` means STARTTLS failed: refused, or a handshake that went wrong."""
    if isinstance(exc, SMTPReplyError):
        return exc.command == "STARTTLS"
    cause: BaseException | None = exc.__cause__
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return True
        cause = cause.__cause__
    return "TLS handshake" in str(exc)


class _ExchangerConnector:
    """How :class:`~smtpcore.server.exchanger.ExchangerSession` opens a session with an
    exchanger, as the relay is configured; what it sends there is the session's."""

    def __init__(
        self,
        *,
        client_factory: ClientFactory,
        hostname: str,
        timeouts: Timeouts,
        tls_context: ssl.SSLContext,
        relay_tls: RelayTLS,
        relay_ca: Path | None = None,
        connections: RelayConnections | None = None,
    ) -> None:
        self.client_factory = client_factory
        self.hostname = hostname
        self.timeouts = timeouts
        self.tls_context = tls_context
        self.relay_tls = relay_tls
        self.relay_ca = relay_ca
        """The CA certificates ``verify`` checks against when a message asks for it
        under another policy (REQUIRETLS); None: the system's trust store."""
        self._contexts = {relay_tls: tls_context}
        self.connections = connections
        """Where sessions that ended cleanly wait for the next message to the same next
        hop (:mod:`smtpcore.server.relaycache`); None: each is QUIT at once."""

    def policy(self) -> MessageTLS:
        """The configured policy, for a message that asks for nothing else."""
        return MessageTLS(self.relay_tls, label=self.relay_tls.value)

    def _context(self, level: RelayTLS) -> ssl.SSLContext:
        context = self._contexts.get(level)
        if context is None:
            context = self._contexts[level] = relay_tls_context(level, self.relay_ca)
        return context

    def _client(self, attempt: Attempt, starttls: bool | None, level: RelayTLS) -> BaseSMTPClient:
        return self.client_factory(
            str(attempt.address),
            attempt.port,
            hostname=self.hostname,
            starttls=starttls,
            ssl_context=self._context(level),
            server_hostname=_tls_name(attempt),
            timeouts=self.timeouts,
        )

    async def _connect(
        self, attempt: Attempt, relay: str, policy: MessageTLS
    ) -> tuple[BaseSMTPClient, bool]:
        """A session with the exchanger, TLS as the message's policy says (module
        docstring of :mod:`smtpcore.server.relay_tls`); under REQUIRETLS, one that
        offers REQUIRETLS (RFC 8689 §4.2.1). And whether it lacks for now what a new
        connection may have (:attr:`~smtpcore.server.relaycache.Idle.lacking_for_now`):
        decided here, where the relay chose to go on without TLS or after HELO, so that
        no client option (a factory's ``starttls=False``) is read as a failure."""
        client, fell_back = await self._tls_session(attempt, relay, policy)
        if policy.requiretls and "REQUIRETLS" not in client.connection.extensions:
            await client.quit()
            raise _lacking(
                client,
                relay,
                TryNext(
                    f"host {relay} does not offer REQUIRETLS after TLS", "5.7.30", requiretls=True
                ),
            )
        return client, fell_back or _lacking_for_now(client)

    async def _tls_session(
        self, attempt: Attempt, relay: str, policy: MessageTLS
    ) -> tuple[BaseSMTPClient, bool]:
        """The session, and whether it is the new connection made without STARTTLS
        after TLS failed under ``may``."""
        level = policy.level
        try:
            starttls = None if level is RelayTLS.MAY else True
            return await self._open(attempt, relay, starttls, policy), False
        except _TLSFailed as failure:
            if level.required:
                detail = f"{relay}: TLS is required ({policy.label}): {failure.detail}"
                raise TryNext(detail, "4.7.5", requiretls=policy.requiretls) from failure
            # Opportunistic TLS goes on in plaintext (RFC 7435 §3), as Postfix's "may",
            # here over a new connection: after a failed handshake the old one is
            # unusable (RFC 3207 §4.1), and a client that will log in stops at a refusal.
            logger.info(
                "%s: %s; trying again without TLS (policy %s)",
                loggable(relay),
                loggable(failure.detail),  # the exchanger's words, maybe
                policy.label,
            )
        try:
            return await self._open(attempt, relay, False, policy), True
        except _TLSFailed as failure:  # pragma: no cover - no STARTTLS is attempted
            raise TryNext(f"{relay}: {failure.detail}") from None

    async def _open(
        self, attempt: Attempt, relay: str, starttls: bool | None, policy: MessageTLS
    ) -> BaseSMTPClient:
        client = self._client(attempt, starttls, policy.level)
        try:
            await client.connect()
        except TLSNotAvailable as exc:
            not_offered = TryNext(
                f"TLS is required ({policy.label}), but was not offered by host {relay}",
                "4.7.4",
                requiretls=policy.requiretls,
            )
            raise _lacking(client, relay, not_offered) from exc
        except SMTPError as exc:
            if starttls is not False and _tls_failure(exc):
                raise _TLSFailed(_tls_reason(exc)) from exc
            permanent = _refused_for_good(exc)
            raise TryNext(
                self._error_text(exc, relay),
                _greeting_status(exc),
                exc.reply,
                local=exc.local,
                permanent=permanent,
                unreachable=not permanent,
            ) from exc
        refusal = client.starttls_refused
        if refusal is not None:  # starttls=None: the client went on in plaintext
            logger.info(
                "%s: STARTTLS refused: %s; going on without TLS (policy %s)",
                loggable(relay),
                loggable(reply_text(refusal)),  # the exchanger's words
                policy.label,
            )
        return client

    def _error_text(self, exc: SMTPError, relay: str, *, end_unanswered: bool = False) -> str:
        """What failed the session, as the log and the waiting recipients keep it, cut to
        :func:`kept_text`: a lost connection's text quotes the replies it left behind, a
        ``421``'s its whole reply. ``end_unanswered``: it failed while an end of data
        waited for its reply (:func:`while_sending_end_of_data` says so), where a drop
        in the middle of the content, say, reads the same as it."""
        if isinstance(exc, SMTPReplyError):
            return kept_text(f"host {relay} refused {exc.command}: {reply_text(exc.reply)}")
        cause = exc.__cause__
        if str(exc).startswith("cannot connect") and isinstance(cause, OSError) and cause.errno:
            return f"connect to {relay}: {os.strerror(cause.errno)}"
        why = f"{relay}: {exc}"
        return while_sending_end_of_data(why) if end_unanswered else kept_text(why)
