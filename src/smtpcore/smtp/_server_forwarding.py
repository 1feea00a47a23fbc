"""XCLIENT and XFORWARD in a server session (Postfix's XCLIENT_README, XFORWARD_README).

A trusted proxy or content filter speaks for the client it relays for: what
its accepted commands said is kept here, the client's for the session and the
message's until its transaction ends. A layer of its own of
:class:`~smtpcore.smtp.ServerConnection` (see ``smtp/_server.py``) because
nothing else in the session reads what they say.
"""

from __future__ import annotations

from typing import Final

from smtpcore.smtp._events import Xclient, Xforward
from smtpcore.smtp._forwarding import XCLIENT_ATTRIBUTES
from smtpcore.smtp._replies import Reply
from smtpcore.smtp._server_transaction import TransactionLayer

_KEPT_THROUGH_TLS: Final = frozenset(
    attribute.name for attribute in XCLIENT_ATTRIBUTES if attribute.name not in {"HELO", "LOGIN"}
)
"""What XCLIENT said that STARTTLS leaves standing: the client's name and addresses.
Its HELO and LOGIN are what that client said in the session, which STARTTLS discards
(RFC 3207 §4.2), as Postfix's STARTTLS resets the HELO name and the SASL login
that XCLIENT set."""


class ForwardingLayer(TransactionLayer):
    """What XCLIENT and XFORWARD said, and what accepting them changes."""

    __slots__ = ()

    # Rarely used state: class attributes until a session sets its own (SessionLayer).
    _forwarded_client: Xclient | None = None

    @property
    def forwarded_client(self) -> Xclient | None:
        """What XCLIENT said about the client this session speaks for: every attribute
        of the accepted XCLIENT commands, a later one overwriting what it names;
        None before the first. It holds to the end of the session, but for the
        ``HELO`` and ``LOGIN``, which STARTTLS discards (RFC 3207 §4.2)."""
        return self._forwarded_client

    @property
    def forwarded_message(self) -> Xforward | None:
        """What XFORWARD said about the next (or open) transaction's message, merged
        as for :attr:`forwarded_client`; cleared when the transaction ends (the end
        of the message, RSET, a failed BDAT, a new hello), as Postfix does."""
        return self._forwarded_message

    def _xclient_accepted(self, command: Xclient, event: Reply) -> bytes:
        """Start over at the greeting stage, speaking for the client XCLIENT names; TLS
        stays as it is, and the session is authenticated as its LOGIN, if it gave one
        (Postfix's XCLIENT_README). The answer is that client's greeting: a 554 keeps
        it named and serves it nothing but QUIT, as a 554 greeting does (RFC 5321 §3.1).

        Whether the session may send XCLIENT again is ``trusted_forwarder``, which the
        application decides again for the named client: a proxy that named the client
        it relays for must not let that client name another (XCLIENT_README, note 1)."""
        known = self._forwarded_client
        self._forwarded_client = command if known is None else known.merged(command)
        self.helo_name = None
        self.extended = False
        self._verbs = self._config.tables.plain_verbs
        self.authenticated = isinstance(self._forwarded_client.login, str)
        self._reset_transaction()
        return event.to_bytes(event.status)  # a greeting: no enhanced code unless given

    def _forget_forwarded_before_tls(self) -> None:
        """At STARTTLS, drop the HELO and LOGIN XCLIENT gave (:data:`_KEPT_THROUGH_TLS`),
        so that a later XCLIENT that names neither merges with nothing from before TLS,
        and :attr:`forwarded_client` says no more than ``authenticated`` does."""
        known = self._forwarded_client
        if known is not None:
            self._forwarded_client = known.only(_KEPT_THROUGH_TLS)

    def _xforward_accepted(self, command: Xforward, event: Reply) -> None:
        known = self._forwarded_message
        self._forwarded_message = command if known is None else known.merged(command)
