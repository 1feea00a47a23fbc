"""The mail transaction of an SMTP server session: MAIL, RCPT, RSET and its end.

:class:`Transaction` keeps the session's :class:`~smtpcore.handler.Envelope`
as the handler accepts the sender and each recipient (RFC 5321 §4.1.1.2,
§4.1.1.3), and ends it, telling the handler (``handle_reset``), however it ends:
RSET, a new EHLO, a refusal that ends the machine's own transaction, the
session's close. The content and the end of the message are
:mod:`~smtpcore._driver._smtp_server_content`'s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from smtpcore._driver._smtp_server_hooks import HandlerHooks
from smtpcore._driver._smtp_server_replies import OK
from smtpcore.address import Mailbox
from smtpcore.handler import Envelope, Recipient
from smtpcore.smtp import Mail, Parameters, Rcpt, Reply, Rset, State
from smtpcore.smtp._ext.auth import read_submitter

IDLE_STATES: Final = frozenset({State.HELLO, State.READY, State.NO_SERVICE})


_new: Final = object.__new__
_SET_RECIPIENT_MAILBOX: Final[Callable[[Recipient, Mailbox], None]] = vars(Recipient)[
    "mailbox"
].__set__
_SET_RECIPIENT_PARAMS: Final[Callable[[Recipient, Parameters], None]] = vars(Recipient)[
    "params"
].__set__


def _submitter(value: str | None) -> str | None:
    """The mailbox ``AUTH=xtext`` names (RFC 4954 §5), in its wire form: None for
    ``<>``, no ``AUTH=``, or a value that names no mailbox (:func:`read_submitter`).
    The machine keeps a parameter as its wire text, so it is decoded here, once, by
    the AUTH entry's own reader, never by a lenient decoder that lets a CR LF by."""
    submitter = read_submitter(value)
    return None if submitter is None else str(submitter)


class Transaction(HandlerHooks):
    """The envelope of the mail transaction under way, from MAIL to its end."""

    __slots__ = ()

    async def _follow_the_machine_out_of_a_transaction(self) -> None:
        """End the session's transaction where the machine's own ended with a refusal
        (a BDAT line refused fails it, RFC 3030 §2): ``handle_reset`` is told, and
        nothing of it (its envelope, what the handler spooled) reaches the next
        message. A session the refusal closed ends its transaction as it closes."""
        if self.session.envelope is not None and self.conn.state in IDLE_STATES:
            await self._end_transaction()

    def _mail(self, command: Mail, reply: Reply | None = None) -> Awaitable[None] | None:
        """Answer ``command`` with ``reply``, or else what the handler replies.

        Like every answer in ``_ANSWERS``, it returns None once it answered, or
        what the session awaits to answer: a handler that keeps Handler's hook
        is not asked (``ServerState.unasked``), and its commands cost no
        coroutine.
        """
        session = self.session
        if reply is None:
            reply = self.state.unasked.get("handle_mail")
            if reply is None:
                args = (session, command)
                asked = self._asked(Transaction._mail, command, "handle_mail", args)
                if not isinstance(asked, tuple):
                    return asked
                reply = asked[0]
        if self._answer(reply).code // 100 == 2:  # accepted (is_positive, without a call)
            submitter = None
            if session.authenticated is not None:
                submitter = _submitter(command.params.get("AUTH"))
            conn = self.conn
            # Envelope(sender, params, submitter=..., xforward=...), every field set
            # here without the constructor's call (a test holds the two equal).
            envelope: Envelope = _new(Envelope)
            envelope.sender = command.sender
            envelope.mail_params = command.params
            envelope.submitter = submitter
            envelope.recipients = []
            # Only a machine that offers XFORWARD has one: no property call otherwise.
            envelope.xforward = conn.forwarded_message if conn.xforward else None
            envelope.content = b""
            envelope.size = 0
            envelope.chunks = []
            session.envelope = envelope
        return None

    def _rset(self, command: Rset) -> Awaitable[None] | None:
        self._answer(OK)
        if self.session.envelope is None:
            return None
        return self._end_transaction()

    def _rcpt(self, command: Rcpt, reply: Reply | None = None) -> Awaitable[None] | None:
        """Answer ``command`` with ``reply``, or else what the handler replies (see
        :meth:`_mail`): nearly every handler has a ``handle_rcpt`` of its own
        (Handler's refuses every recipient), which most often answers at once."""
        session = self.session
        envelope = session.envelope
        assert envelope is not None
        if reply is None:
            reply = self.state.unasked.get("handle_rcpt")
            if reply is None:
                args = (session, envelope, command)
                asked = self._asked(Transaction._rcpt, command, "handle_rcpt", args)
                if not isinstance(asked, tuple):
                    return asked
                reply = asked[0]
        if self._answer(reply).code // 100 == 2:  # accepted (is_positive, without a call)
            # Recipient(mailbox, params), without the constructor's call.
            recipient: Recipient = _new(Recipient)
            _SET_RECIPIENT_MAILBOX(recipient, command.recipient)
            _SET_RECIPIENT_PARAMS(recipient, command.params)
            envelope.recipients.append(recipient)
        return None

    async def _end_transaction(self) -> None:
        """Drop the open transaction, telling the handler if there was one."""
        envelope = self.session.envelope
        if envelope is None:
            return
        self.session.envelope = None
        envelope.chunks.clear()
        await self._call("handle_reset", (self.session, envelope))
