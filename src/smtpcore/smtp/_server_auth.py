"""AUTH in a server session (RFC 4954): which mechanisms are offered, and failures.

The SASL exchange itself is the mechanisms' (``smtpcore.sasl``) and the
application's, through :class:`~smtpcore.smtp.ServerAuth` (``smtp/_auth.py``);
this layer of :class:`~smtpcore.smtp.ServerConnection` holds what the machine
decides: whether an AUTH may start, and the count of failed exchanges toward
``max_auth_failures``, each exchange counted once however many say it failed.
"""

from __future__ import annotations

from typing import Final

from smtpcore._errors import LocalProtocolError
from smtpcore.sasl import SERVER_MECHANISMS
from smtpcore.smtp._commands import reply
from smtpcore.smtp._events import Auth, AuthResponse
from smtpcore.smtp._replies import EnhancedStatus, Reply
from smtpcore.smtp._server_replies import RepliesLayer
from smtpcore.smtp._state import State

# RFC 4954 §6: the enhanced codes of the AUTH failure replies.
_AUTH_FAILURE_STATUS: Final = {
    454: EnhancedStatus(4, 7, 0),
    534: EnhancedStatus(5, 7, 9),
    535: EnhancedStatus(5, 7, 8),
    538: EnhancedStatus(5, 7, 11),
}
_CREDENTIALS_INVALID: Final = _AUTH_FAILURE_STATUS[535]
"""RFC 4954 §6's 5.7.8, "Authentication credentials invalid": an AUTH refusal that
says it is a failed authentication, whatever its code (see ``_auth_refused``)."""


def _needs_tls(mechanism: str) -> bool:
    known = SERVER_MECHANISMS.get(mechanism)
    return known is None or known.requires_tls


class AuthLayer(RepliesLayer):
    """AUTH's checks, its offered mechanisms and its failure count."""

    __slots__ = ()

    # Rarely used state: class attributes until a session sets its own (SessionLayer).
    _auth_failures = 0

    _exchanges = 0
    """AUTH exchanges started: the last one's number is the exchange under way, or the
    last one (an exchange is known by its number here)."""

    _refused_exchange = 0
    """The exchange answered last with a refusal (5xx), 0 for none: the one an
    application counts after answering it, though the client's next AUTH may have
    been read already (pipelined)."""

    _counted_exchange = 0
    """The exchange counted last toward ``max_auth_failures``: each counts once,
    however many say it failed."""

    def count_auth_failure(self) -> None:
        """Count a failed authentication only the application can tell, before or
        after answering it: the AUTH exchange just refused (while it is uncounted,
        even once the client's next, pipelined AUTH has been read), else the one under
        way, judged a credential and refused it, whatever its reply says. An exchange this
        machine ended by refusing the client's answer to a 334 (not base64, a line
        over ``max_auth_line``; RFC 4954 §4) once the mechanism had refused the
        credentials (a token's error challenge, RFC 7628 §3.2.2; :meth:`ServerAuth.abandon
        <smtpcore.smtp.ServerAuth.abandon>` gives that refusal), whose reply stays the
        syntax error's, and which :meth:`ServerAuth.answer
        <smtpcore.smtp.ServerAuth.answer>` counts so; or a handler's veto of the
        identity a mechanism proved, worded ``538``, ``534`` or any other code. It
        counts toward ``max_auth_failures`` as a 535 does (at the limit the next AUTH
        gets 421), and once: an exchange the machine counted by its reply (a ``535``,
        a ``5.7.8``) or that was counted already is not counted again, so an
        application may say so of every failed login it answers."""
        if self._state in (State.ERROR, State.CLOSED):
            raise LocalProtocolError(f"the session is over ({self._state.name})")
        refused = self._refused_exchange
        # The exchange just refused, while it is uncounted, even once the next AUTH
        # has been read; else the one under way, refused before its answer.
        self._count_exchange(refused if refused > self._counted_exchange else self._exchanges)

    def _count_exchange(self, exchange: int) -> None:
        """Count AUTH exchange number ``exchange`` toward ``max_auth_failures``, unless
        it, or a later one, was counted."""
        if exchange > self._counted_exchange:
            self._counted_exchange = exchange
            self._auth_failures += 1

    def _check_auth(self, command: Auth, line: bytes) -> Reply | None:
        if self.authenticated:
            return reply(503, "5.5.1", "Already authenticated")
        config = self._config
        if self._auth_failures >= config.max_auth_failures:
            return reply(421, "4.7.0", f"{config.hostname} Too many failed authentications")
        if command.mechanism not in self._auth_mechanisms:
            return reply(504, "5.5.4", "Unrecognized authentication type")
        if command.mechanism not in self.offered_auth_mechanisms():
            return reply(538, "5.7.11", "Encryption required for requested mechanism")
        self._exchanges += 1  # an exchange starts: it has counted nothing
        return None

    def offered_auth_mechanisms(self) -> list[str]:
        """The SASL mechanisms the EHLO reply lists now.

        Mechanisms that send a reusable secret (PLAIN, LOGIN and the bearer
        tokens) are offered only under TLS unless ``auth_require_tls`` is off.
        """
        if self.tls or not self._config.auth_require_tls:
            return list(self._auth_mechanisms)
        return [name for name in self._auth_mechanisms if not _needs_tls(name)]

    def _auth_accepted(self, command: Auth | AuthResponse, event: Reply) -> None:
        self.authenticated = True

    def _auth_refused(self, command: Auth | AuthResponse, event: Reply) -> bytes:
        """A refused AUTH counts toward ``max_auth_failures`` when it says the
        credentials were judged invalid (RFC 4954 §6): a ``535``, or a reply with
        status 5.7.8, such as the ``501`` that must answer a ``*`` (RFC 4954 §4) sent
        after the mechanism refused a token (RFC 7628 §3.2.2). A plain cancel, a 454,
        a 538 or a 504 (an unknown mechanism, whatever its status) counts nothing
        here: one that judged a credential all the same (a handler's veto) is the
        application's to count (:meth:`count_auth_failure`). An exchange counts once."""
        if event.code == 535 or (event.status == _CREDENTIALS_INVALID and event.code != 504):
            self._count_exchange(self._exchanges)
        if event.status is None and self._config.enhanced_status_codes:
            event = Reply(event.code, event.text, _AUTH_FAILURE_STATUS[event.code])
        return self._finish(command, event)
