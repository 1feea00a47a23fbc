"""The SMTP side of the reference server: what each listener accepts, and where it goes.

Three handlers share one way of receiving a message:

- ``smtp`` (:class:`InboundHandler`): mail for the local domains from
  anyone, no AUTH; it never relays (``550 5.7.1``), and a local recipient
  without a mailbox gets ``550 5.1.1``.
- ``submission`` and ``smtps`` (:class:`SubmissionHandler`, RFC 6409 and
  RFC 8314): AUTH first, then local and remote recipients.
- ``lmtp`` (:class:`LMTPHandler`, RFC 2033): local recipients only (one at
  another domain gets ``550 5.1.2``: LMTP never relays), one reply per recipient
  after the content.

The content is streamed to a spool file in the queue as it arrives, after
our ``Received:`` line, which names the client that XFORWARD forwards, if any
(:mod:`smtpcore.server.origin`), as the log line of the message does. At the
end of the message, local recipients get their Maildir copy (with
``Return-Path:``) and remote ones a queue entry, all written and synced first
and made visible by renames after; only then is the 250 sent (RFC 5321
§6.1). A mailbox that refuses its rename gets its copy through the queue

This module keeps the handlers and what each listener accepts: the envelope (the
disk's room at MAIL, each recipient routed at RCPT) and the submission listener's own
rules. Their shared parts each have a module of their own, built on one another in this
order: the session's counts and refusals logged (``_app_session``), the commit
(``_app_commit``), the content's reception (``_app_content``, with :data:`MAX_HOPS`,
which is read there: setting it on this module changes nothing), and the LMTP
listener's commit (``_app_lmtp``). Where the message goes, :class:`MailStore` and
:class:`Accepted`, is ``_app_store``'s. Every public name is still imported from here.
"""

from __future__ import annotations

from smtpcore._driver._failures import INSUFFICIENT_STORAGE
from smtpcore._driver._refusals import path_text
from smtpcore._numbers import parse_number
from smtpcore.address import AddressError, Mailbox
from smtpcore.handler import Envelope, Session
from smtpcore.routing import LocalDelivery, Rejected, RejectReason, RemoteDelivery, Router
from smtpcore.server._app_content import MAX_HOPS, _MailContent
from smtpcore.server._app_lmtp import _LMTPDelivery
from smtpcore.server._app_store import Accepted, MailStore
from smtpcore.server.config import mailbox_key, parse_user_address
from smtpcore.server.internal import InternalAddresses
from smtpcore.smtp import Mail, Rcpt, Reply, quoted

__all__ = [
    "Accepted",
    "InboundHandler",
    "LMTPHandler",
    "MAX_HOPS",
    "MailStore",
    "SubmissionHandler",
]


# The classes moved into private modules keep the name callers import them by in
# ``__module__``, which tracebacks and pickling read (as ``_maildrop_errors`` does).
for _moved in (Accepted, MailStore):
    _moved.__module__ = __name__
del _moved


class _MailHandler(_MailContent):
    """What the three listeners share: routing, spooling, committing, logging."""

    # -- envelope --------------------------------------------------------------

    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        """A sender is taken only while the disk has room for its message: ``452
        4.3.1`` otherwise (RFC 1870 §6.1), before the client sends it (see
        :mod:`smtpcore.server.freespace`)."""
        self._stats(session).mail += 1
        session.extra["routes"] = {}
        size = command.params.get("SIZE")
        declared = None if size is None else parse_number(size, max_digits=20)
        if not self.store.room.allows(declared):
            return self._refuse(
                session, "MAIL", INSUFFICIENT_STORAGE, sender=path_text(command.sender)
            )
        return None

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        stats = self._stats(session)
        stats.rcpt += 1
        decision = self.router.route(
            command.recipient, authenticated=session.authenticated is not None
        )
        reply = None if isinstance(decision, LocalDelivery) else self._not_local(command, decision)
        if reply is not None:
            return self._refuse(
                session,
                "RCPT",
                reply,
                sender=path_text(envelope.sender),
                recipient=command.recipient,
            )
        routes: dict[str, str | None] = session.extra.setdefault("routes", {})
        if isinstance(decision, LocalDelivery):
            key = self.store.mailboxes.lookup(command.recipient)
            if key is None:
                reply = Reply(
                    550,
                    quoted(f"<{command.recipient}>: no such mailbox here (user unknown)"),
                    "5.1.1",
                )
                return self._refuse(
                    session,
                    "RCPT",
                    reply,
                    sender=path_text(envelope.sender),
                    recipient=command.recipient,
                )
            routes[str(command.recipient)] = key
        else:
            routes[str(command.recipient)] = None
        stats.accepted += 1
        return Reply(250, "OK", "2.1.5")

    def _not_local(self, command: Rcpt, decision: RemoteDelivery | Rejected) -> Reply | None:
        """The refusal of a recipient the router does not deliver here, or None to take
        it for relaying: the router's own answer (``550 5.7.1`` relay access denied
        where the client may not relay). A listener answers otherwise by overriding
        this alone."""
        if isinstance(decision, Rejected):
            return Reply(decision.code, decision.text, decision.status)
        return None


class InboundHandler(_MailHandler):
    """The ``smtp`` listener: mail for our domains from anyone; never a relay."""

    listener = "smtp"


class SubmissionHandler(_MailHandler):
    """The ``submission`` and ``smtps`` listeners: AUTH before MAIL (RFC 6409 §4.3,
    RFC 4954 §6), then any recipient."""

    listener = "submission"

    def __init__(
        self,
        store: MailStore,
        router: Router,
        listener: str = "submission",
        *,
        internal: InternalAddresses | None = None,
    ) -> None:
        super().__init__(store, router)
        self.listener = listener
        self.internal = internal if internal is not None else InternalAddresses()

    def _not_local(self, command: Rcpt, decision: RemoteDelivery | Rejected) -> Reply | None:
        """A recipient the router would relay to an address literal naming an internal
        address is refused (``550 5.7.1``, :mod:`smtpcore.server.internal`): the
        submission listener must not make the server connect to services behind it.
        Other refusals are the router's."""
        address = self.internal.refused_literal(command.recipient)
        if address is not None and isinstance(decision, RemoteDelivery):
            return Reply(
                550,
                quoted(f"<{command.recipient}>: relay to internal address {address} refused"),
                "5.7.1",
            )
        return super()._not_local(command, decision)

    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        if session.authenticated is None:
            self._stats(session).mail += 1
            reply = Reply(530, "Authentication required", "5.7.0")
            return self._refuse(session, "MAIL", reply, sender=path_text(command.sender))
        if not self._may_send_as(str(session.authenticated), command.sender):
            self._stats(session).mail += 1
            reply = Reply(
                553,
                quoted(  # a login name has no length limit of its own
                    f"<{command.sender}>: Sender address rejected: not owned by user "
                    f"{session.authenticated}"
                ),
                "5.7.1",
            )
            return self._refuse(session, "MAIL", reply, sender=path_text(command.sender))
        return await super().handle_mail(session, command)

    def _may_send_as(self, login: str, sender: Mailbox | None) -> bool:
        """Whether ``login`` may use ``sender`` as MAIL FROM: its own address, or an alias
        the users file grants it (Postfix's ``reject_sender_login_mismatch``). The null
        sender is allowed, as Postfix allows it. A user's login is the address
        SASLprep'd (``アイ@`` for ``ｱｲ@``): its mailbox is the user's."""
        config = self.config
        if sender is None or not config.sender_login_match:
            return True
        login_key = config.user_key(login)
        if login_key is None:  # not a user here (an XCLIENT LOGIN): the address itself
            try:
                login_key = mailbox_key(parse_user_address(login))
            except (AddressError, ValueError):
                return False
        sender_key = mailbox_key(sender) if sender.domain else sender.local_part.lower()
        return sender_key == login_key or login_key in config.sender_aliases.get(sender_key, ())


class LMTPHandler(_LMTPDelivery, _MailHandler):
    """The ``lmtp`` listener: final delivery into local mailboxes, one reply per
    recipient (RFC 2033 §4.2); no queue, no relaying."""

    listener = "lmtp"
    lmtp = True

    def _not_local(self, command: Rcpt, decision: RemoteDelivery | Rejected) -> Reply | None:
        """A recipient at a domain (or an address literal) that is not ours gets ``550
        5.1.2``, a bad destination system address (RFC 3463 §3.2), not the relay refusal
        ``550 5.7.1`` of the ``smtp`` listener, and is never taken, whatever the router
        would relay: LMTP is final delivery (RFC 2033 §1), where no policy could allow a
        relay, and the front end that sent it there is told the address is wrong, as
        Dovecot's LMTP tells it of an unknown user. Other refusals (a routing trick) are
        the router's."""
        if isinstance(decision, RemoteDelivery) or decision.reason is RejectReason.RELAY_DENIED:
            return Reply(
                550,
                quoted(
                    f"<{command.recipient}>: no such domain here (LMTP delivers to local "
                    "mailboxes only)"
                ),
                "5.1.2",
            )
        return super()._not_local(command, decision)
